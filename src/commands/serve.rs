//! `dbackup serve`: the status page over HTTP on a loopback address ([`crate::report::serve`]).
//!
//! stdout: the URL, once listening. Exit 0 when stopped by SIGTERM or SIGINT; 2 for a bad config or a non-loopback
//! address without `--allow-remote`; 1 when the address cannot be bound.

use crate::cli::{GlobalArgs, ServeArgs};
use crate::exit::Exit;
use crate::report::serve;
use crate::ui::Ui;

pub fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<Exit> {
    let settings = super::load_settings(global)?;
    let ui = Ui::new(&settings.output);
    let listen = args.listen.unwrap_or(settings.report.listen);
    let listener = serve::bind(listen, args.allow_remote)?;
    // The address bound: with port 0, the port the system chose.
    let listen = listener.local_addr().unwrap_or(listen);
    if !listen.ip().is_loopback() {
        ui.warn(format_args!(
            "listening on {listen}, not a loopback address: anyone who can reach it sees the state of your backups \
             (the page has no login)"
        ));
    }
    serve::run(&settings, listener, &ui)?;
    Ok(Exit::Ok)
}
