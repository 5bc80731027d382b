//! The run's epoch: a random id made once when the daemon starts. Sequence
//! numbers restart at 1 in every run, so a `seq` alone cannot say which run
//! it came from; `epoch` + `seq` can.
//!
//! Owns: the [`Epoch`] type, how one is made and checked, and the
//! `EPOCH:SEQ` form of a client's [`Position`] that SSE ids (and so a
//! browser's `Last-Event-ID`) carry.
//!
//! Channels: none; the epoch is made in `server` and handed to the history
//! ring and the stats readings.
//!
//! Must not know: clients, transports, what a `seq` numbers.

use std::fmt;

/// Longest epoch a client may send back. Ours are 16 hex digits; a longer
/// limit lets an epoch of another version still be read as "another run"
/// instead of being refused.
const MAX_EPOCH_LEN: usize = 64;

/// The id of one run of the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch(String);

impl Epoch {
    /// A fresh epoch: 64 random bits from the operating system, as 16 hex digits.
    pub fn random() -> Epoch {
        // A v4 UUID's version and variant bits sit in different halves, so
        // the XOR of the halves is 64 bits that are all random.
        let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
        Epoch(format!("{:016x}", high ^ low))
    }

    /// Reads an epoch a client sent back: 1 to 64 ASCII letters, digits, `-`
    /// or `_`. The error says what was expected, without naming the parameter.
    pub fn parse(text: &str) -> Result<Epoch, String> {
        let valid = (1..=MAX_EPOCH_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Epoch(text.to_owned()))
        } else {
            Err(format!(
                "expected the epoch of a run (1 to {MAX_EPOCH_LEN} letters, digits, '-' or '_'), got {text:?}"
            ))
        }
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a resuming client is: the last `seq` it saw and, if it said so, the
/// run that `seq` belongs to. Without an epoch the position cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The run the client was in, if it said.
    pub epoch: Option<Epoch>,
    /// The last `seq` it saw.
    pub seq: u64,
}

impl Position {
    /// Reads an SSE event id as a browser sends it back in `Last-Event-ID`:
    /// `EPOCH:SEQ`, or a bare `SEQ` (ids from before epochs, or typed by hand).
    pub fn parse_event_id(text: &str) -> Result<Position, String> {
        let text = text.trim();
        let (epoch, seq) = match text.split_once(':') {
            Some((epoch, seq)) => (Some(Epoch::parse(epoch)?), seq),
            None => (None, text),
        };
        let seq = parse_seq(seq).map_err(|e| format!("{e} (send EPOCH:SEQ or SEQ)"))?;
        Ok(Position { epoch, seq })
    }
}

/// Reads a `seq` a client sent back.
pub fn parse_seq(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("expected a non-negative integer seq, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(text: &str) -> Epoch {
        Epoch::parse(text).expect("a valid epoch")
    }

    #[test]
    fn a_random_epoch_is_16_hex_digits_and_differs_between_runs() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_eq!(a.as_str().len(), 16, "{a}");
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
        assert_eq!(Epoch::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn an_event_id_with_an_epoch_names_the_run_and_the_seq() {
        assert_eq!(
            Position::parse_event_id("0123abcd4567ef89:191"),
            Ok(Position {
                epoch: Some(epoch("0123abcd4567ef89")),
                seq: 191
            })
        );
        assert_eq!(
            Position::parse_event_id(" run-2_b:0 "),
            Ok(Position {
                epoch: Some(epoch("run-2_b")),
                seq: 0
            })
        );
    }

    #[test]
    fn a_bare_seq_is_a_position_without_an_epoch() {
        assert_eq!(
            Position::parse_event_id("1200"),
            Ok(Position {
                epoch: None,
                seq: 1200
            })
        );
    }

    #[test]
    fn malformed_event_ids_are_refused_saying_what_was_expected() {
        for bad in [
            "", ":", "abc:", ":12", "abc:-1", "abc:1.5", "a b:3", "a:b:3", "soon",
        ] {
            let error = Position::parse_event_id(bad).expect_err(bad);
            assert!(error.contains("expected"), "{bad:?}: {error}");
        }
        let too_long = format!("{}:1", "a".repeat(MAX_EPOCH_LEN + 1));
        assert!(Position::parse_event_id(&too_long).is_err());
        assert!(Position::parse_event_id(&format!("{}:1", "a".repeat(MAX_EPOCH_LEN))).is_ok());
    }
}
