//! The site: operating rooms, each with its cameras and at most one open case. A case belongs
//! to a room and covers every camera of it; a camera belongs to one room.
//!
//! This is the model alone, without I/O: each operation checks everything first and either
//! changes the site and returns the room's lifecycle event to publish (`CaseStarted`,
//! `CaseEnded`; none for a camera change), or returns a [`SiteError`] naming what was wrong and
//! changes nothing. Starting or ending a case, adding or removing a camera, touches only its
//! own room.
//!
//! Names: a room and a camera are 1 to 64 of `A-Z a-z 0-9 _ -`; a camera's stream id is
//! `<room>/<camera>` (unambiguous, as neither holds a `/`). A case id follows the contract's
//! id rules (1 to 128 bytes, no control characters), without surrounding spaces, and is never
//! open in two rooms at once.

use std::collections::{BTreeMap, BTreeSet};

use orstream_proto::wire::MAX_CASE_CAMERAS;
use orstream_proto::{CaseEnded, CaseStarted, StreamEvent, stream_event};

/// Longest room or camera name.
pub const MAX_NAME_LEN: usize = 64;

/// What was wrong with an operation on the site; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    /// A room or camera name, or a case id, breaks the naming rules.
    #[error("{what} {value:?}: {reason}")]
    BadName {
        /// `room`, `camera` or `case id`.
        what: &'static str,
        /// The value given (control characters escaped by `{:?}`).
        value: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// No room of that name.
    #[error("no room {0}")]
    UnknownRoom(String),
    /// A room of that name exists already.
    #[error("room {0} exists already")]
    RoomExists(String),
    /// The room has a camera of that name already.
    #[error("room {room} has a camera {camera} already")]
    CameraExists {
        /// The room.
        room: String,
        /// The camera.
        camera: String,
    },
    /// The room has no camera of that name.
    #[error("room {room} has no camera {camera}")]
    UnknownCamera {
        /// The room.
        room: String,
        /// The camera.
        camera: String,
    },
    /// The room has as many cameras as a case may list.
    #[error("room {room} has {MAX_CASE_CAMERAS} cameras, the most a case may cover")]
    TooManyCameras {
        /// The room.
        room: String,
    },
    /// The room has an open case already.
    #[error("room {room} has case {case} open; end it first")]
    CaseOpen {
        /// The room.
        room: String,
        /// Its open case.
        case: String,
    },
    /// The case id is open in another room.
    #[error("case {case} is open in room {room}")]
    CaseElsewhere {
        /// The room that has it open.
        room: String,
        /// The case.
        case: String,
    },
    /// The room has no open case.
    #[error("room {0} has no open case")]
    NoOpenCase(String),
}

/// A case open in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCase {
    /// The operator's case id (never patient data).
    pub case_id: String,
    /// When it was started (UTC ns).
    pub started_ns: i64,
    /// Every camera that has served it: those of the room at its start and those added since.
    pub served: BTreeSet<String>,
}

/// A room: its cameras by name and its open case, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    /// Camera names.
    pub cameras: BTreeSet<String>,
    /// The open case.
    pub case: Option<OpenCase>,
}

/// The site's rooms by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    rooms: BTreeMap<String, Room>,
}

/// The stream id of `camera` in `room`.
pub fn stream_id(room: &str, camera: &str) -> String {
    format!("{room}/{camera}")
}

/// Checks a room or camera name.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), SiteError> {
    let bad = |reason: String| SiteError::BadName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(bad(format!("must be 1 to {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(bad(format!("{c:?} is not one of A-Z a-z 0-9 _ -")));
    }
    Ok(())
}

/// Checks a case id: the contract's id rules, no surrounding spaces.
pub(crate) fn check_case_id(value: &str) -> Result<(), SiteError> {
    let bad = |reason: &str| SiteError::BadName {
        what: "case id",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if !orstream_proto::wire::is_valid_id(value) {
        return Err(bad("must be 1 to 128 bytes without control characters"));
    }
    if value.trim() != value {
        return Err(bad("must not start or end with spaces"));
    }
    Ok(())
}

impl Site {
    /// A site without rooms.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rooms by name.
    pub fn rooms(&self) -> &BTreeMap<String, Room> {
        &self.rooms
    }

    /// Adds an empty room.
    pub fn add_room(&mut self, room: &str) -> Result<(), SiteError> {
        check_name("room", room)?;
        if self.rooms.contains_key(room) {
            return Err(SiteError::RoomExists(room.to_owned()));
        }
        self.rooms.insert(room.to_owned(), Room::default());
        Ok(())
    }

    fn room_mut(&mut self, room: &str) -> Result<&mut Room, SiteError> {
        self.rooms
            .get_mut(room)
            .ok_or_else(|| SiteError::UnknownRoom(room.to_owned()))
    }

    /// Adds a camera to a room; during an open case it serves the case from now on.
    pub fn add_camera(&mut self, room: &str, camera: &str) -> Result<(), SiteError> {
        check_name("camera", camera)?;
        let entry = self.room_mut(room)?;
        if entry.cameras.contains(camera) {
            return Err(SiteError::CameraExists {
                room: room.to_owned(),
                camera: camera.to_owned(),
            });
        }
        let served = entry.case.as_ref().map_or(0, |c| c.served.len());
        if entry.cameras.len().max(served) >= MAX_CASE_CAMERAS {
            return Err(SiteError::TooManyCameras {
                room: room.to_owned(),
            });
        }
        entry.cameras.insert(camera.to_owned());
        if let Some(case) = &mut entry.case {
            case.served.insert(stream_id(room, camera));
        }
        Ok(())
    }

    /// Removes a camera from a room; an open case keeps it among the cameras that served it.
    pub fn remove_camera(&mut self, room: &str, camera: &str) -> Result<(), SiteError> {
        let entry = self.room_mut(room)?;
        if !entry.cameras.remove(camera) {
            return Err(SiteError::UnknownCamera {
                room: room.to_owned(),
                camera: camera.to_owned(),
            });
        }
        Ok(())
    }

    /// Starts `case_id` in `room` at `now_ns`: the room's `CaseStarted` event.
    pub fn start_case(
        &mut self,
        room: &str,
        case_id: &str,
        now_ns: i64,
    ) -> Result<StreamEvent, SiteError> {
        check_case_id(case_id)?;
        if let Some((other, _)) = self
            .rooms
            .iter()
            .find(|(_, r)| r.case.as_ref().is_some_and(|c| c.case_id == case_id))
        {
            return Err(SiteError::CaseElsewhere {
                room: other.clone(),
                case: case_id.to_owned(),
            });
        }
        let entry = self.room_mut(room)?;
        if let Some(open) = &entry.case {
            return Err(SiteError::CaseOpen {
                room: room.to_owned(),
                case: open.case_id.clone(),
            });
        }
        let served: BTreeSet<String> = entry.cameras.iter().map(|c| stream_id(room, c)).collect();
        let cameras = served.iter().cloned().collect();
        entry.case = Some(OpenCase {
            case_id: case_id.to_owned(),
            started_ns: now_ns,
            served,
        });
        Ok(StreamEvent::for_room(
            room,
            case_id,
            now_ns,
            stream_event::Kind::CaseStarted(CaseStarted { cameras }),
        ))
    }

    /// Ends the open case of `room` at `now_ns`: the room's `CaseEnded` event, listing every
    /// camera that served the case.
    pub fn end_case(
        &mut self,
        room: &str,
        now_ns: i64,
        detail: &str,
    ) -> Result<StreamEvent, SiteError> {
        let entry = self.room_mut(room)?;
        let case = entry
            .case
            .take()
            .ok_or_else(|| SiteError::NoOpenCase(room.to_owned()))?;
        Ok(StreamEvent::for_room(
            room,
            &case.case_id,
            now_ns,
            stream_event::Kind::CaseEnded(CaseEnded {
                cameras: case.served.into_iter().collect(),
                detail: orstream_proto::wire::fit_detail(detail),
            }),
        ))
    }

    /// Opens `case` in `room` again as it was (after a restart of ingest): no event, the
    /// case's start was published when it started.
    pub fn restore_case(&mut self, room: &str, case: OpenCase) -> Result<(), SiteError> {
        check_case_id(&case.case_id)?;
        if let Some((other, _)) = self
            .rooms
            .iter()
            .find(|(_, r)| r.case.as_ref().is_some_and(|c| c.case_id == case.case_id))
        {
            return Err(SiteError::CaseElsewhere {
                room: other.clone(),
                case: case.case_id,
            });
        }
        let entry = self.room_mut(room)?;
        if let Some(open) = &entry.case {
            return Err(SiteError::CaseOpen {
                room: room.to_owned(),
                case: open.case_id.clone(),
            });
        }
        entry.case = Some(case);
        Ok(())
    }

    /// The open case a camera's frames belong to: None outside a case (its frames are not
    /// published) and for an unknown camera.
    pub fn case_of(&self, room: &str, camera: &str) -> Option<&OpenCase> {
        let entry = self.rooms.get(room)?;
        if !entry.cameras.contains(camera) {
            return None;
        }
        entry.case.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use orstream_proto::stream_event::Kind;

    use super::*;

    fn site() -> Site {
        let mut site = Site::new();
        for room in ["OR3", "OR4"] {
            site.add_room(room).unwrap();
        }
        for camera in ["lap", "room"] {
            site.add_camera("OR3", camera).unwrap();
        }
        site.add_camera("OR4", "lap").unwrap();
        site
    }

    fn cameras(event: &StreamEvent) -> Vec<String> {
        match &event.kind {
            Some(Kind::CaseStarted(c)) => c.cameras.clone(),
            Some(Kind::CaseEnded(c)) => c.cameras.clone(),
            other => panic!("not a case event: {other:?}"),
        }
    }

    #[test]
    fn a_case_covers_the_rooms_cameras_and_those_added_while_it_is_open() {
        let mut site = site();
        let started = site.start_case("OR3", "case-0042", 1_000).unwrap();
        assert_eq!(
            (started.room_id.as_str(), started.case_id.as_str()),
            ("OR3", "case-0042")
        );
        assert!(started.stream_id.is_empty());
        assert_eq!(cameras(&started), ["OR3/lap", "OR3/room"]);
        // The event is one the contract accepts.
        let wire = orstream_proto::encode(&started);
        assert_eq!(
            orstream_proto::decode::<StreamEvent>(&wire).unwrap(),
            started
        );

        site.add_camera("OR3", "micro").unwrap();
        site.remove_camera("OR3", "room").unwrap();
        assert_eq!(site.case_of("OR3", "micro").unwrap().case_id, "case-0042");
        assert!(
            site.case_of("OR3", "room").is_none(),
            "a removed camera publishes nothing"
        );
        let ended = site.end_case("OR3", 9_000, "ended by staff").unwrap();
        assert_eq!(cameras(&ended), ["OR3/lap", "OR3/micro", "OR3/room"]);
        assert_eq!(ended.time_ns, 9_000);
        assert!(
            site.case_of("OR3", "lap").is_none(),
            "outside a case nothing is published"
        );

        // The next case covers the room as it is now.
        let next = site.start_case("OR3", "case-0043", 10_000).unwrap();
        assert_eq!(cameras(&next), ["OR3/lap", "OR3/micro"]);
    }

    #[test]
    fn a_bad_request_names_what_was_wrong_and_changes_nothing() {
        let mut site = site();
        site.start_case("OR3", "case-0042", 1_000).unwrap();
        let before = site.clone();
        let refused = [
            (site.start_case("OR9", "case-1", 2_000).err(), "no room OR9"),
            (
                site.start_case("OR3", "case-1", 2_000).err(),
                "room OR3 has case case-0042 open",
            ),
            (
                site.start_case("OR4", "case-0042", 2_000).err(),
                "case case-0042 is open in room OR3",
            ),
            (site.start_case("OR4", "case\u{0}1", 2_000).err(), "case id"),
            (site.start_case("OR4", " case-1", 2_000).err(), "spaces"),
            (
                site.start_case("OR4", &"c".repeat(129), 2_000).err(),
                "case id",
            ),
            (
                site.end_case("OR4", 2_000, "").err(),
                "room OR4 has no open case",
            ),
            (
                site.add_camera("OR3", "lap").err(),
                "has a camera lap already",
            ),
            (site.add_camera("OR3", "a/b").err(), "camera \"a/b\""),
            (site.add_camera("OR3", "").err(), "1 to 64"),
            (
                site.remove_camera("OR4", "room").err(),
                "room OR4 has no camera room",
            ),
            (site.add_room("OR3").err(), "room OR3 exists already"),
            (site.add_room("OR 5").err(), "room \"OR 5\""),
        ];
        for (error, expected) in refused {
            let error = error.expect("refused").to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
        assert_eq!(site, before, "a refused request changed the site");
    }

    #[test]
    fn a_room_holds_at_most_as_many_cameras_as_a_case_may_list() {
        let mut site = Site::new();
        site.add_room("OR1").unwrap();
        for i in 0..MAX_CASE_CAMERAS {
            site.add_camera("OR1", &format!("cam-{i}")).unwrap();
        }
        let error = site.add_camera("OR1", "one-more").unwrap_err();
        assert!(matches!(error, SiteError::TooManyCameras { .. }), "{error}");
        // During a case, a removed camera still counts: the case's end lists it.
        site.start_case("OR1", "case-1", 1).unwrap();
        site.remove_camera("OR1", "cam-0").unwrap();
        assert!(site.add_camera("OR1", "one-more").is_err());
        let ended = site.end_case("OR1", 2, "").unwrap();
        assert_eq!(cameras(&ended).len(), MAX_CASE_CAMERAS);
        let wire = orstream_proto::encode(&ended);
        assert!(orstream_proto::decode::<StreamEvent>(&wire).is_ok());
    }
}
