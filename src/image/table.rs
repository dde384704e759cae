//! A disk's partition table as `sfdisk --dump` writes it: parsed (it comes back from the drive, so it is hostile:
//! bounded, every key and value checked), measured (the bytes a target disk needs), and written back out for a new
//! disk: without `device:` and `last-lba:` (a larger disk keeps its own end), with the last partition grown to the
//! end on `--grow`. Disk and partition UUIDs are kept, so `/etc/fstab` entries by PARTUUID still match.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The longest dump accepted (a GPT table of 128 partitions is about 25 KiB).
pub const MAX_DUMP_BYTES: usize = 256 << 10;
/// The most partitions accepted.
pub const MAX_PARTITIONS: usize = 256;
/// The highest partition number accepted (GPT tables hold 128 entries unless made larger).
const MAX_PARTITION_NUMBER: u32 = 4096;
/// What GPT keeps at the end of the disk: the backup header and its 128 entries (33 sectors of 512 bytes).
const GPT_TAIL_SECTORS: u64 = 33;

/// A parsed `sfdisk --dump`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// `gpt` or `dos`.
    pub label: String,
    /// The disk's identifier (GPT: a GUID; dos: `0x1234abcd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_id: Option<String>,
    pub sector_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_lba: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lba: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_length: Option<u64>,
    pub partitions: Vec<Partition>,
}

/// One partition line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Its number (`5` of `/dev/sda5`): the digits ending its name in the dump, else the one after the previous
    /// partition's; the script written back names it so, so the kernel numbers it the same.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    #[serde(rename = "type")]
    pub type_: String,
    /// GPT: the partition GUID (the PARTUUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// GPT: the partition name (PARTLABEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootable: bool,
}

/// Why a dump was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the partition table dump is larger than {MAX_DUMP_BYTES} bytes")]
    TooLong,
    #[error("line {line} of the partition table dump: {problem}")]
    Line { line: usize, problem: String },
    #[error("the partition table dump {0}")]
    Whole(String),
}

fn number(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A type, UUID, label-id or attrs value: hex digits, letters, `-`, `:`, `=` and `x` only (no quotes, no spaces).
fn plain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'_' | b'.'))
}

/// A GPT partition name as sfdisk quotes it: printable, no quote or backslash (they could break the line).
fn name_ok(v: &str) -> bool {
    v.chars().count() <= 72 && v.chars().all(|c| !c.is_control() && c != '"' && c != '\\')
}

/// The partition number that ends a node name (`/dev/sda5` -> 5, `/dev/nvme0n1p3` -> 3, `disk.img2` -> 2), as sfdisk
/// reads it; none when the name does not end with a digit.
fn node_number(node: &str) -> Option<u32> {
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let d = &node[node.len() - digits..];
    if d.is_empty() {
        return None;
    }
    Some(d.parse().unwrap_or(u32::MAX))
}

/// Splits `a=1, b="x, y", bootable` at the commas outside quotes.
fn fields(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut begin = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[begin..i].trim());
                begin = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    out.push(s[begin..].trim());
    Some(out.into_iter().filter(|f| !f.is_empty()).collect())
}

/// Parses the text of `sfdisk --dump` (see the module docs for what is accepted).
pub fn parse(text: &[u8]) -> Result<Table, TableError> {
    if text.len() > MAX_DUMP_BYTES {
        return Err(TableError::TooLong);
    }
    let text =
        std::str::from_utf8(text).map_err(|_| TableError::Whole("is not UTF-8 text".into()))?;
    let mut t = Table {
        label: String::new(),
        label_id: None,
        sector_size: 512,
        first_lba: None,
        last_lba: None,
        table_length: None,
        partitions: Vec::new(),
    };
    let mut unit_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |problem: String| TableError::Line {
            line: i + 1,
            problem,
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `/dev/sda1 : start=...` or a header `key: value`.
        if let Some((node, rest)) = line.split_once(" : ") {
            let p = partition_line(node, rest, &t.partitions, &bad)?;
            t.partitions.push(p);
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("neither a header line nor a partition".into()))?;
        let v = v.trim();
        let num = |v: &str| number(v).ok_or_else(|| bad(format!("{k} is not a number")));
        match k.trim() {
            "label" if v == "gpt" || v == "dos" => t.label = v.to_string(),
            "label" => return Err(bad("only gpt and dos tables are restored".into())),
            "label-id" if plain(v) => t.label_id = Some(v.to_string()),
            "device" => {}
            "unit" if v == "sectors" => unit_seen = true,
            "unit" => return Err(bad("the unit must be sectors".into())),
            "first-lba" => t.first_lba = Some(num(v)?),
            "last-lba" => t.last_lba = Some(num(v)?),
            "table-length" => t.table_length = Some(num(v)?),
            "sector-size" => {
                let n = num(v)?;
                if !matches!(n, 512 | 1024 | 2048 | 4096) {
                    return Err(bad(format!(
                        "sector size {n} is not 512, 1024, 2048 or 4096"
                    )));
                }
                t.sector_size = n;
            }
            other => {
                return Err(bad(format!(
                    "unexpected header {}",
                    crate::stdx::show_str(other)
                )));
            }
        }
    }
    if t.label.is_empty() {
        return Err(TableError::Whole("has no label line (gpt or dos)".into()));
    }
    if !unit_seen {
        return Err(TableError::Whole("has no `unit: sectors` line".into()));
    }
    if t.partitions.is_empty() {
        return Err(TableError::Whole("lists no partition".into()));
    }
    Ok(t)
}

/// One partition line of the dump (`/dev/sda1 : start=..., size=..., type=...`), numbered as sfdisk numbers it and
/// checked against the partitions `before` it; `bad` makes the error of this line.
fn partition_line(
    node: &str,
    rest: &str,
    before: &[Partition],
    bad: &dyn Fn(String) -> TableError,
) -> Result<Partition, TableError> {
    if node.trim().is_empty() || node.contains('"') {
        return Err(bad("a partition line without a device name".into()));
    }
    if before.len() >= MAX_PARTITIONS {
        return Err(bad(format!("more than {MAX_PARTITIONS} partitions")));
    }
    // sfdisk numbers a partition by the digits ending its name (`/dev/sda5`, `/dev/nvme0n1p3`): a GPT disk
    // may have gaps, a dos disk's logical partitions start at 5.
    let n = match node_number(node.trim()) {
        Some(n) => n,
        None => before.last().map_or(1, |p| p.number.saturating_add(1)),
    };
    if n == 0 || n > MAX_PARTITION_NUMBER {
        return Err(bad(format!(
            "partition number {n} (partitions are numbered 1 to {MAX_PARTITION_NUMBER})"
        )));
    }
    if before.iter().any(|p| p.number == n) {
        return Err(bad(format!("partition {n} twice")));
    }
    let mut p = Partition {
        number: n,
        start: 0,
        size: 0,
        type_: String::new(),
        uuid: None,
        name: None,
        attrs: None,
        bootable: false,
    };
    let (mut start, mut size) = (None, None);
    for f in fields(rest).ok_or_else(|| bad("an unclosed quote".into()))? {
        if f == "bootable" {
            p.bootable = true;
            continue;
        }
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| bad(format!("{:?} is not key=value", crate::stdx::show_str(f))))?;
        let v = v.trim();
        match k.trim() {
            "start" => start = Some(number(v).ok_or_else(|| bad("start is not a number".into()))?),
            "size" => size = Some(number(v).ok_or_else(|| bad("size is not a number".into()))?),
            "type" if plain(v) => p.type_ = v.to_string(),
            "uuid" if plain(v) => p.uuid = Some(v.to_string()),
            "attrs" => {
                let inner = v.trim_matches('"');
                if !inner.split(' ').all(|a| a.is_empty() || plain(a)) {
                    return Err(bad("attrs holds unexpected characters".into()));
                }
                p.attrs = Some(inner.to_string());
            }
            "name" => {
                let inner = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                if !name_ok(inner) {
                    return Err(bad("the partition name holds unexpected characters".into()));
                }
                p.name = Some(inner.to_string());
            }
            other => {
                return Err(bad(format!(
                    "unexpected {}={}",
                    crate::stdx::show_str(other),
                    crate::stdx::show_str(v)
                )));
            }
        }
    }
    p.start = start.ok_or_else(|| bad("a partition without start".into()))?;
    p.size = size.ok_or_else(|| bad("a partition without size".into()))?;
    if p.type_.is_empty() {
        return Err(bad("a partition without type".into()));
    }
    if p.size == 0 || p.start.checked_add(p.size).is_none() {
        return Err(bad(
            "a partition of size 0, or past the end of any disk".into()
        ));
    }
    Ok(p)
}

impl Table {
    /// The sector after the last partition's end.
    pub fn end_sector(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.start.saturating_add(p.size))
            .max()
            .unwrap_or(0)
    }

    /// The smallest disk, in bytes, that holds every partition at its place and size (and GPT's backup header).
    pub fn needed_bytes(&self) -> u64 {
        let tail = if self.label == "gpt" {
            GPT_TAIL_SECTORS
        } else {
            0
        };
        self.end_sector()
            .saturating_add(tail)
            .saturating_mul(self.sector_size)
    }

    /// The partition that ends last (what `--grow` grows).
    pub fn last(&self) -> Option<&Partition> {
        self.partitions
            .iter()
            .max_by_key(|p| p.start.saturating_add(p.size))
    }

    /// Whether a dos table has an extended partition (its logical partitions cannot be grown in place).
    pub fn has_extended(&self) -> bool {
        self.partitions.iter().any(|p| self.is_extended(p))
    }

    /// Whether `p` is a dos table's extended partition (the container of the logical ones).
    fn is_extended(&self, p: &Partition) -> bool {
        self.label == "dos" && matches!(p.type_.to_ascii_lowercase().as_str(), "5" | "f" | "85")
    }

    /// The first two partitions that share a sector (a dos table's extended partition holds its logical ones: not
    /// an overlap). A table sfdisk wrote has none.
    pub fn overlapping(&self) -> Option<(&Partition, &Partition)> {
        let parts: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| !self.is_extended(p))
            .collect();
        parts.iter().enumerate().find_map(|(i, a)| {
            parts[i + 1..]
                .iter()
                .find(|b| {
                    a.start < b.start.saturating_add(b.size)
                        && b.start < a.start.saturating_add(a.size)
                })
                .map(|b| (*a, *b))
        })
    }

    /// The script for `sfdisk` on a new disk: the same table without `device:` and `last-lba:` (the new disk's end
    /// is its own); with `grow`, the last partition without a size, so sfdisk extends it to the end of the disk.
    pub fn script(&self, grow: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "label: {}", self.label);
        if let Some(id) = &self.label_id {
            let _ = writeln!(s, "label-id: {id}");
        }
        let _ = writeln!(s, "unit: sectors");
        if let Some(f) = self.first_lba {
            let _ = writeln!(s, "first-lba: {f}");
        }
        if let Some(n) = self.table_length {
            let _ = writeln!(s, "table-length: {n}");
        }
        let _ = writeln!(s, "sector-size: {}", self.sector_size);
        s.push('\n');
        let last = self.last().map(|p| p.number);
        for p in &self.partitions {
            // sfdisk takes the number from the digits ending the name: the name itself is not used.
            let _ = write!(s, "part{} : start={}", p.number, p.start);
            if !(grow && Some(p.number) == last) {
                let _ = write!(s, ", size={}", p.size);
            }
            let _ = write!(s, ", type={}", p.type_);
            push_some(&mut s, ", uuid=", &p.uuid, "");
            push_some(&mut s, ", name=\"", &p.name, "\"");
            push_some(&mut s, ", attrs=\"", &p.attrs, "\"");
            if p.bootable {
                s.push_str(", bootable");
            }
            s.push('\n');
        }
        s
    }

    /// The table as `sfdisk --dump` would print it for a disk named `device` (the script with a device name on
    /// every partition line; [`parse`] reads it back).
    #[cfg(test)]
    pub fn dump(&self, device: &str) -> String {
        let script = self.script(false);
        let mut out = String::new();
        for line in script.lines() {
            match line.strip_prefix("part") {
                Some(numbered) => {
                    let _ = writeln!(out, "{device}{numbered}");
                }
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }
}

/// Appends `before`, the value and `after` to `out` when there is a value; nothing when there is none.
pub(super) fn push_some(out: &mut String, before: &str, value: &Option<String>, after: &str) {
    if let Some(v) = value {
        out.push_str(before);
        out.push_str(v);
        out.push_str(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DUMP: &str = "label: gpt
label-id: D6DA4891-2B7A-824D-8793-3DCF3807D0C6
device: disk.img
unit: sectors
first-lba: 2048
last-lba: 524254
sector-size: 512

disk.img1 : start=        2048, size=      131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=B56ED884-12D8-2145-8E4B-8D0E1495C7A2, name=\"EFI System, boot\"
disk.img2 : start=      133120, size=      389120, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F, uuid=C66E023F-60C0-4C4A-AF13-36D8983FE910, name=\"root\", attrs=\"LegacyBIOSBootable GUID:63\"
";

    #[test]
    fn a_gpt_dump_is_read_measured_and_rewritten_for_a_new_disk() {
        let t = parse(DUMP.as_bytes()).unwrap();
        assert_eq!(t.label, "gpt");
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].name.as_deref(), Some("EFI System, boot"));
        assert_eq!(t.partitions[1].number, 2);
        assert_eq!(t.end_sector(), 522240);
        assert_eq!(t.needed_bytes(), (522240 + 33) * 512);
        let script = t.script(true);
        assert!(
            !script.contains("last-lba") && !script.contains("device:"),
            "{script}"
        );
        assert!(script.contains("start=133120, type=0FC63DAF"), "{script}");
        assert!(t.script(false).contains("start=133120, size=389120,"));
        assert_eq!(
            parse(t.dump("/dev/sda").as_bytes()).unwrap().partitions,
            t.partitions
        );
    }

    /// A disk whose partitions are not numbered 1, 2, 3...: a GPT disk after a partition was deleted, a dos disk
    /// with logical partitions (5, 6). Before, the numbers were the positions in the dump (1, 2), so the images of
    /// partitions 3 and 5 found no partition (or another one) and the table was written back renumbered.
    #[test]
    fn partitions_keep_the_numbers_the_dump_gives_them() {
        let gpt = "label: gpt\nunit: sectors\n\n\
                   /dev/nvme0n1p1 : start=2048, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
                   /dev/nvme0n1p3 : start=8192, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D84F8E4F\n";
        let t = parse(gpt.as_bytes()).unwrap();
        let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 3]);
        let script = t.script(false);
        assert!(
            script.contains("\npart1 : start=2048,") && script.contains("\npart3 : start=8192,"),
            "sfdisk numbers a partition by the digits ending its name: {script}"
        );
        let dos = "label: dos\nunit: sectors\n\n\
                   disk.img1 : start=2048, size=20480, type=83\n\
                   disk.img2 : start=30720, size=60000, type=5\n\
                   disk.img5 : start=32768, size=10000, type=83\n\
                   disk.img6 : start=45056, size=10000, type=82\n";
        let t = parse(dos.as_bytes()).unwrap();
        let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 5, 6]);
        assert_eq!(parse(t.dump("/dev/sdb").as_bytes()).unwrap(), t);
        for (text, want) in [
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=1, size=2, type=83\n/dev/b1 : start=5, size=2, type=83\n",
                "partition 1 twice",
            ),
            (
                "label: gpt\nunit: sectors\n/dev/a0 : start=1, size=2, type=83\n",
                "partition number 0",
            ),
            (
                "label: gpt\nunit: sectors\n/dev/a99999 : start=1, size=2, type=83\n",
                "partition number 99999",
            ),
        ] {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn hostile_dumps_are_refused_with_the_line() {
        let cases = [
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=1, size=2, type=83, bogus=1\n",
                "line 3",
            ),
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=1, size=2\n",
                "without type",
            ),
            ("label: sun\n", "only gpt and dos"),
            ("label: gpt\nunit: sectors\n", "no partition"),
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=1, size=2, type=83, name=\"a\nb\"\n",
                "line 3",
            ),
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=18446744073709551615, size=2, type=83\n",
                "past the end",
            ),
            (
                "label: gpt\nunit: sectors\n/dev/a1 : start=1, size=2, type=8\"3\n",
                "line 3",
            ),
            ("label: gpt\nsector-size: 7\n", "sector size 7"),
        ];
        for (text, want) in cases {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert_eq!(
            parse(&vec![b'a'; MAX_DUMP_BYTES + 1]),
            Err(TableError::TooLong)
        );
    }

    fn arb_partition() -> impl Strategy<Value = Partition> {
        (
            0u64..1 << 40,
            1u64..1 << 30,
            "[0-9A-F]{8}-[0-9A-F]{4}",
            proptest::option::of("[0-9A-F]{8}"),
            proptest::option::of("[a-zA-Z0-9 ,_-]{0,20}"),
            any::<bool>(),
        )
            .prop_map(|(start, size, type_, uuid, name, bootable)| Partition {
                number: 0,
                start,
                size,
                type_,
                uuid,
                name,
                attrs: None,
                bootable,
            })
    }

    proptest! {
        #[test]
        fn any_table_round_trips_through_its_dump(
            parts in proptest::collection::vec(arb_partition(), 1..8),
            gpt in any::<bool>(),
        ) {
            let mut t = Table {
                label: if gpt { "gpt" } else { "dos" }.into(),
                label_id: Some("0x1234abcd".into()),
                sector_size: 512,
                first_lba: Some(2048),
                last_lba: None,
                table_length: None,
                partitions: parts,
            };
            for (i, p) in t.partitions.iter_mut().enumerate() {
                p.number = i as u32 + 1;
            }
            let back = parse(t.dump("/dev/nvme0n1p").as_bytes()).unwrap();
            prop_assert_eq!(back, t);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn near_dumps_parse_or_fail_without_panicking(
            lines in proptest::collection::vec("(label: (gpt|dos)|unit: sectors|sector-size: [0-9]{1,5}|/dev/x[0-9] : [a-z=0-9, \"]{0,40})", 0..8),
        ) {
            if let Ok(t) = parse(lines.join("\n").as_bytes()) {
                prop_assert!(!t.partitions.is_empty());
                let _ = t.script(true);
            }
        }
    }
}
