//! A preview's conditions as the status holds them.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::status::{Reason, condition};

/// A condition of a preview: `metav1.Condition` (the same fields, written the same way, and
/// its schema in the CRD), but that its type, status and reason are read as the operator's
/// own constants when they are one, as they nearly always are. Every cached preview holds six
/// or seven conditions, and a copy of each of these three words was a third of its status:
/// about 0.6 MB at 1000 previews.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type", deserialize_with = "known_word")]
    pub type_: Cow<'static, str>,
    /// "True", "False" or "Unknown".
    #[serde(deserialize_with = "known_word")]
    pub status: Cow<'static, str>,
    #[serde(default, deserialize_with = "known_word")]
    pub reason: Cow<'static, str>,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The condition types, statuses and reasons the operator writes.
fn known(word: &str) -> Option<&'static str> {
    use condition::*;
    const WORDS: &[&str] = &[
        "True",
        "False",
        "Unknown",
        AVAILABLE,
        TESTS_SUCCEEDED,
        AWAKE,
        SCM_REACHABLE,
        READY,
        ADMITTED,
        UP_TO_DATE,
    ];
    (WORDS.iter().copied())
        .find(|known| *known == word)
        .or_else(|| Reason::parse(word).map(Reason::as_str))
}

/// A word of a condition: the constant when it is [`known`], else a copy.
fn known_word<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    struct Word;
    impl Visitor<'_> for Word {
        type Value = Cow<'static, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, word: &str) -> Result<Self::Value, E> {
            Ok(known(word).map_or_else(|| Cow::Owned(word.to_owned()), Cow::Borrowed))
        }
    }
    d.deserialize_str(Word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// As the API server writes them, and as `metav1.Condition` reads and writes them.
    fn written() -> serde_json::Value {
        json!([
            {"type": "Ready", "status": "False", "reason": "TestFailed",
             "message": "test e2e failed", "lastTransitionTime": "2026-12-07T21:00:00Z",
             "observedGeneration": 3},
            {"type": "Smoke", "status": "True", "reason": "SomebodyElses", "message": "",
             "lastTransitionTime": "2026-12-07T21:00:00Z"},
        ])
    }

    #[test]
    fn a_condition_reads_and_writes_as_metav1_condition() {
        let ours: Vec<Condition> = serde_json::from_value(written()).expect("conditions");
        let theirs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
            serde_json::from_value(written()).expect("metav1 conditions");
        assert_eq!(
            serde_json::to_value(&ours).expect("ours"),
            serde_json::to_value(&theirs).expect("theirs")
        );
        assert_eq!(ours[0].observed_generation, Some(3));
        assert_eq!(ours[1].message, "");
    }

    #[test]
    fn the_operators_words_are_not_copied_per_condition() {
        let read: Vec<Condition> = serde_json::from_value(written()).expect("conditions");
        let borrowed = |word: &Cow<'static, str>| matches!(word, Cow::Borrowed(_));
        let ready = &read[0];
        assert!(borrowed(&ready.type_) && borrowed(&ready.status) && borrowed(&ready.reason));
        assert_eq!(
            (&*ready.type_, &*ready.reason),
            (condition::READY, "TestFailed")
        );
        // Words the operator never writes are kept as read.
        let other = &read[1];
        assert!(!borrowed(&other.type_) && !borrowed(&other.reason));
        assert_eq!((&*other.type_, &*other.reason), ("Smoke", "SomebodyElses"));
    }
}
