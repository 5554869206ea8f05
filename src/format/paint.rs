//! The palette of the text format: which SGR escape each part of a line gets, and the colour
//! of a channel, chosen by a fixed hash of its name so that it is the same in every run and
//! on every machine.
//!
//! The escapes are written by hand (Select Graphic Rendition, ECMA-48) and limited to the
//! eight basic colours and their bright twins, which every colour terminal has.

/// What a piece of text is, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The time and the `pid=` field: dim.
    Quiet,
    /// A JSON object's key.
    Key,
    /// A JSON string value.
    Text,
    /// A JSON number.
    Number,
    /// `true`, `false`, `null`.
    Literal,
    /// A table's `schema.table` in a watch-table sentence.
    Table,
    /// A label: `new=`, `old=`, `old_key=`, `truncated`, `stale`.
    Label,
    /// A watch-table operation.
    Op(OpKind),
    /// A channel name, in the colour of its palette slot.
    Channel(usize),
}

/// The operations a watch-table event reports, each with a colour of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpKind {
    Insert,
    Update,
    Delete,
    Truncate,
}

/// The channel palette, bold: red, green, yellow, blue, magenta, cyan, bright red, bright blue.
const CHANNEL_COLOURS: [&str; 8] = [
    "1;31", "1;32", "1;33", "1;34", "1;35", "1;36", "1;91", "1;94",
];

/// Which palette slot a channel gets: FNV-1a (32 bits) of its bytes. A fixed function, never
/// `RandomState`, so a channel keeps its colour across runs and machines.
pub(super) fn channel_slot(name: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % CHANNEL_COLOURS.len() as u32) as usize
}

fn sgr(part: Part) -> &'static str {
    match part {
        Part::Quiet => "2",
        Part::Key => "34",
        Part::Text => "32",
        Part::Number => "36",
        Part::Literal => "35",
        Part::Table => "1",
        Part::Label => "2",
        Part::Op(OpKind::Insert) => "1;32",
        Part::Op(OpKind::Update) => "1;33",
        Part::Op(OpKind::Delete) => "1;31",
        Part::Op(OpKind::Truncate) => "1;35",
        Part::Channel(slot) => CHANNEL_COLOURS[slot % CHANNEL_COLOURS.len()],
    }
}

/// Appends `text`, wrapped in `part`'s colour when `color` is on. `text` must already be safe
/// to show (control characters escaped).
pub(super) fn push(out: &mut String, part: Part, text: &str, color: bool) {
    if color && !text.is_empty() {
        out.push_str("\u{1b}[");
        out.push_str(sgr(part));
        out.push('m');
        out.push_str(text);
        out.push_str("\u{1b}[0m");
    } else {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_slot_is_fixed_fnv_1a() {
        // FNV-1a 32 of "" is the offset basis, 0x811c9dc5 = 2166136261; of "a" 0xe40c292c.
        assert_eq!(channel_slot(""), (0x811c_9dc5_u32 % 8) as usize);
        assert_eq!(channel_slot("a"), (0xe40c_292c_u32 % 8) as usize);
        // The integration tests rely on these two differing (tests/it/output.rs).
        assert_ne!(channel_slot("orders"), channel_slot("jobs"));
    }

    #[test]
    fn the_channel_colours_are_eight_different_ones() {
        let mut seen: Vec<&str> = (0..8).map(|slot| sgr(Part::Channel(slot))).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn colour_wraps_and_resets() {
        let mut s = String::new();
        push(&mut s, Part::Key, "id", true);
        assert_eq!(s, "\u{1b}[34mid\u{1b}[0m");
        let mut plain = String::new();
        push(&mut plain, Part::Key, "id", false);
        assert_eq!(plain, "id");
    }
}
