//! The one step every runtime writer takes: an [`Event`] — an admin
//! change, the config file read again, a DNS answer, the fleet's document
//! — turns the [`Inputs`] the routing table is made from into the next
//! ones. Pure: no I/O, no clock, no table. `ControlPlane::commit` then
//! persists, publishes and audits what it returns; nothing else does.

use crate::config::Config;
use crate::state::Overrides;

use super::apply::{Change, apply};
use super::error::ControlError;
use super::reconcile::reconcile;

/// Everything the routing table is made from.
#[derive(Clone)]
pub(super) struct Inputs {
    /// The config file as read: pools may name upstreams by DNS name.
    pub raw_file: Config,
    /// `raw_file` with names replaced by their current addresses.
    pub file: Config,
    /// The runtime changes in force: alone, as saved; in a fleet, the
    /// fleet's document reconciled with this instance's file.
    pub overrides: Overrides,
    /// In a fleet (`[cluster]`): the state as etcd holds it.
    pub shared: Option<Shared>,
}

/// The runtime state a fleet shares: the document as etcd holds it (before
/// this instance's file reconciles it into `overrides`) and its revision.
#[derive(Clone)]
pub(super) struct Shared {
    pub prefix: String,
    pub doc: Overrides,
    pub revision: i64,
}

/// Something that moves the runtime state.
pub(super) enum Event<'a> {
    /// An admin call or a lifecycle task (drained removals, rollout
    /// moves). In a fleet a change becomes the fleet's document first.
    Change(&'a Change),
    /// The config file read again: as read and with names expanded.
    File { raw: Box<Config>, file: Box<Config> },
    /// A DNS name moved: the file with names expanded again.
    Addresses(Box<Config>),
    /// The fleet's document at `revision` (another instance's change, or
    /// this one's back through the watch).
    Fleet { doc: Box<Overrides>, revision: i64 },
}

impl Event<'_> {
    /// A change or a reload someone asked for is refused when it cannot be
    /// saved; an address or a fleet document is a fact: it is served even
    /// then (a failed save is logged).
    pub fn refused_unless_saved(&self) -> bool {
        matches!(self, Event::Change(_) | Event::File { .. })
    }

    /// Runtime changes the file supersedes are audited where the file or
    /// the change is: not for a fleet document, whose changes were audited
    /// by the instance that made them.
    pub fn audits_drops(&self) -> bool {
        !matches!(self, Event::Fleet { .. })
    }
}

/// What an event makes of the inputs.
pub(super) struct Stepped {
    pub next: Inputs,
    /// A sentence for each runtime change the file now supersedes.
    pub dropped: Vec<String>,
}

impl Inputs {
    /// What changes are made on: the fleet's document or this instance's
    /// overrides.
    pub fn base(&self) -> &Overrides {
        self.shared.as_ref().map_or(&self.overrides, |s| &s.doc)
    }

    /// The revision of the fleet's document (0: alone or none yet).
    pub fn revision(&self) -> i64 {
        self.shared.as_ref().map_or(0, |s| s.revision)
    }
}

/// The base `change` makes, or why it is refused. `in_rotation`: whether
/// a pool has an upstream taking traffic now.
pub(super) fn propose(
    now: &Inputs,
    change: &Change,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<Overrides, ControlError> {
    apply(change, now.base(), &now.file, in_rotation)
}

/// The one step: the inputs after `event`, with the overrides reconciled
/// against the file as it now is.
pub(super) fn step(
    now: &Inputs,
    event: Event<'_>,
    in_rotation: &dyn Fn(&str) -> bool,
) -> Result<Stepped, ControlError> {
    let mut next = now.clone();
    match event {
        Event::Change(change) => {
            let base = propose(now, change, in_rotation)?;
            match &mut next.shared {
                Some(shared) => shared.doc = base,
                None => next.overrides = base,
            }
        }
        Event::File { mut raw, mut file } => {
            // Settings that only apply at start are kept, so status stays
            // truthful (in both: a DNS answer expands the raw file again).
            for f in [&mut file, &mut raw] {
                f.proxy = now.file.proxy.clone();
                f.admin = now.file.admin.clone();
                f.state = now.file.state.clone();
            }
            next.raw_file = *raw;
            next.file = *file;
        }
        Event::Addresses(file) => next.file = *file,
        Event::Fleet { doc, revision } => {
            if let Some(shared) = &mut next.shared {
                shared.doc = *doc;
                shared.revision = revision;
            }
        }
    }
    let (overrides, dropped) = reconcile(&next.file, next.base().clone());
    next.overrides = overrides;
    Ok(Stepped { next, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Split;

    fn file(split: &str) -> Config {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"web\"\nsplit = {{ {split} }}\n\
             [pool.blue]\nupstreams = [{{ addr = \"127.0.0.1:9001\" }}]\n\
             [pool.green]\nupstreams = [{{ addr = \"127.0.0.1:9002\" }}]\n"
        );
        Config::parse("t.toml", &text).expect("test file is valid")
    }

    fn alone(file: Config) -> Inputs {
        Inputs {
            raw_file: file.clone(),
            file,
            overrides: Overrides::default(),
            shared: None,
        }
    }

    fn set_split(pool: &str) -> Change {
        Change::SetSplit {
            route: "web".into(),
            split: Split::new([(pool, 100)]).expect("test split is valid"),
            force: true,
        }
    }

    #[test]
    fn a_file_changing_a_split_drops_the_runtime_one_with_a_reason() {
        let now = alone(file("blue = 100"));
        let changed =
            step(&now, Event::Change(&set_split("green")), &|_| true).expect("the change applies");
        assert!(changed.dropped.is_empty());
        assert!(changed.next.overrides.splits.contains_key("web"));

        let reread = file("blue = 50, green = 50");
        let event = Event::File {
            raw: Box::new(reread.clone()),
            file: Box::new(reread),
        };
        let reloaded = step(&changed.next, event, &|_| true).expect("the file applies");
        assert!(reloaded.next.overrides.splits.is_empty());
        assert_eq!(reloaded.dropped.len(), 1, "{:?}", reloaded.dropped);
        assert!(reloaded.dropped[0].contains("route web"));
    }

    #[test]
    fn in_a_fleet_a_change_moves_the_document_and_a_document_moves_the_revision() {
        let mut now = alone(file("blue = 100"));
        now.shared = Some(Shared {
            prefix: "/cutover".into(),
            doc: Overrides::default(),
            revision: 7,
        });
        let changed =
            step(&now, Event::Change(&set_split("green")), &|_| true).expect("the change applies");
        let doc = changed.next.base().clone();
        assert!(doc.splits.contains_key("web"));
        assert_eq!(changed.next.revision(), 7, "only etcd gives a revision");

        let doc = Box::new(doc);
        let adopted =
            step(&now, Event::Fleet { doc, revision: 8 }, &|_| true).expect("a document applies");
        assert_eq!(adopted.next.revision(), 8);
        assert!(adopted.next.overrides.splits.contains_key("web"));
    }

    #[test]
    fn a_refused_change_is_an_error_and_moves_nothing() {
        let now = alone(file("blue = 100"));
        let refused = step(&now, Event::Change(&set_split("purple")), &|_| true);
        assert!(refused.is_err());
        assert!(now.overrides.splits.is_empty());
    }
}
