//! Shared by the ingest integration tests: fresh topics, an in-process RTSP server serving an
//! H.264 test stream, clips generated with GStreamer, and readers of the frames and events
//! topics.

#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "shared by several test binaries; a failed expectation is the test failing"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use orstream_bus::{Bus, Consumer};
use orstream_proto::{Frame, StreamEvent, stream_event::Kind};
use orstream_test_support::names::unique;
use orstream_test_support::topic;

/// Fresh frames and events topics for one test, created (one partition each) so readers can
/// subscribe before the service starts.
pub fn topics(bus: &Bus, test: &str) -> (String, String) {
    let base = unique(&format!("test.ingest.{test}"));
    let topics = (format!("{base}.frames"), format!("{base}.streams"));
    for topic in [&topics.0, &topics.1] {
        bus.create_topic(topic, 1, Duration::from_secs(30))
            .expect("topic created");
    }
    topics
}

/// Host realtime clock, Unix nanoseconds.
pub fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// Decoded frames and events seen so far on a test's two topics.
pub struct Observed {
    frames_consumer: Consumer,
    events_consumer: Consumer,
    pub frames: Vec<(Frame, i64)>,
    pub events: Vec<StreamEvent>,
    /// Raw event payloads, to check that nothing secret was published.
    pub raw_events: Vec<Vec<u8>>,
}

impl Observed {
    pub fn new(bus: &Bus, frames_topic: &str, events_topic: &str) -> Self {
        Self {
            frames_consumer: topic::reader(bus, frames_topic),
            events_consumer: topic::reader(bus, events_topic),
            frames: Vec::new(),
            events: Vec::new(),
            raw_events: Vec::new(),
        }
    }

    /// Reads what is available on both topics: each poll waits at most `wait`, and each topic
    /// is read for at most a second so a busy one cannot starve the caller.
    pub fn poll(&mut self, wait: Duration) -> usize {
        let mut n = 0;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until
            && let Some(message) = poll(&self.frames_consumer, wait)
        {
            let frame: Frame = orstream_proto::decode(&message.payload).expect("valid frame");
            assert_eq!(message.key.as_deref(), Some(frame.stream_id.as_bytes()));
            self.frames.push((frame, now_ns()));
            n += 1;
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until
            && let Some(message) = poll(&self.events_consumer, wait)
        {
            let event: StreamEvent = orstream_proto::decode(&message.payload).expect("valid event");
            assert_eq!(message.key.as_deref(), Some(event.stream_id.as_bytes()));
            self.raw_events.push(message.payload.to_vec());
            self.events.push(event);
            n += 1;
        }
        n
    }

    /// Polls until `done` holds, failing after `timeout` with `what`.
    pub fn until(&mut self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll(Duration::from_millis(200));
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; events so far:\n{}",
                self.describe_events()
            );
        }
    }

    /// Polls until nothing new arrives for `quiet` (after a flush everything is there).
    pub fn drain(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while last.elapsed() < quiet && Instant::now() < deadline {
            if self.poll(Duration::from_millis(200)) > 0 {
                last = Instant::now();
            }
        }
    }

    pub fn frames_of(&self, stream_id: &str) -> Vec<&Frame> {
        self.frames
            .iter()
            .map(|(f, _)| f)
            .filter(|f| f.stream_id == stream_id)
            .collect()
    }

    pub fn events_of(&self, stream_id: &str) -> Vec<&Kind> {
        self.events
            .iter()
            .filter(|e| e.stream_id == stream_id)
            .filter_map(|e| e.kind.as_ref())
            .collect()
    }

    pub fn describe_events(&self) -> String {
        self.events
            .iter()
            .map(|e| format!("  {} epoch {}: {:?}", e.stream_id, e.session_epoch, e.kind))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One message, or `None` on a timeout or a retriable error (a topic whose metadata has not
/// reached the consumer yet).
fn poll(consumer: &Consumer, wait: Duration) -> Option<orstream_bus::Message> {
    match consumer.poll(wait) {
        Ok(message) => message,
        Err(error) if error.is_retriable() => None,
        Err(error) => panic!("poll failed: {error}"),
    }
}

/// Checks the identity rules for one stream's frames in topic order: within each epoch seq
/// runs 0, 1, 2, ... without gaps and capture times increase; epochs only grow.
pub fn check_identity(frames: &[&Frame]) {
    let mut current: Option<(u64, u64, i64)> = None;
    for frame in frames {
        match current {
            Some((epoch, seq, capture)) if epoch == frame.session_epoch => {
                assert_eq!(frame.seq, seq + 1, "seq gap in epoch {epoch}");
                assert!(
                    frame.capture_time_ns > capture,
                    "capture time not increasing in epoch {epoch} at seq {}",
                    frame.seq
                );
            }
            Some((epoch, _, _)) => {
                assert!(frame.session_epoch > epoch, "epoch went back");
                assert_eq!(frame.seq, 0, "a new epoch must start at seq 0");
            }
            None => assert_eq!(frame.seq, 0, "the first frame must have seq 0"),
        }
        current = Some((frame.session_epoch, frame.seq, frame.capture_time_ns));
    }
}

/// Runs `description ! filesink location=path` to its end.
pub fn write_with(path: &Path, description: &str) {
    orstream_ingest::init().unwrap();
    let description = format!("{description} ! filesink location=\"{}\"", path.display());
    let pipeline = gst::parse::launch(&description).expect("writer pipeline");
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the file was written in time");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(message.view(), gst::MessageView::Eos(_)),
        "writing {} failed: {message:?}",
        path.display()
    );
}

/// Writes an H.264 MP4 clip of `frames` frames at 30 fps.
pub fn make_clip(path: &Path, frames: u32, width: u32, height: u32) {
    write_with(
        path,
        &format!(
            "videotestsrc num-buffers={frames} pattern=ball ! \
             video/x-raw,width={width},height={height},framerate=30/1,format=I420 ! \
             openh264enc gop-size=30 ! h264parse ! mp4mux"
        ),
    );
}

/// An RTSP server in this process serving a live H.264 test stream at
/// `rtsp://127.0.0.1:PORT/cam`. Each client gets its own media, so a reconnecting client
/// starts a fresh stream.
pub struct RtspServer {
    server: rtsp::RTSPServer,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    source: Mutex<Option<glib::SourceId>>,
    port: u16,
    /// The pipelines of the media served so far, newest last.
    media: Arc<Mutex<Vec<gst::Element>>>,
}

impl RtspServer {
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// A server that serves only a client logging in with `user` and `password` (basic
    /// authentication).
    pub fn with_login(user: &str, password: &str) -> Self {
        Self::serve(Some((user, password)))
    }

    fn serve(login: Option<(&str, &str)>) -> Self {
        orstream_ingest::init().unwrap();
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(
            "( videotestsrc is-live=true pattern=ball ! \
               video/x-raw,width=320,height=240,framerate=30/1,format=I420 ! \
               valve name=valve drop=false ! \
               openh264enc gop-size=30 complexity=low ! h264parse ! \
               rtph264pay name=pay0 pt=96 config-interval=1 )",
        );
        factory.set_shared(false);
        if let Some((user, password)) = login {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera-user")
                .build();
            auth.add_basic(rtsp::RTSPAuth::make_basic(user, password).as_str(), &token);
            server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gst::Structure::builder("camera-user")
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        let media = Arc::new(Mutex::new(Vec::new()));
        let configured = Arc::clone(&media);
        factory.connect_media_configure(move |_, m| {
            configured.lock().unwrap().push(m.element());
        });
        server
            .mount_points()
            .expect("mount points")
            .add_factory("/cam", factory);
        let source = server.attach(Some(&context)).expect("server attaches");
        let port = u16::try_from(server.bound_port()).expect("bound port");
        // Re-attaching after a stop must bind the same port.
        server.set_service(&port.to_string());
        let loop_ = main_loop.clone();
        let loop_context = context.clone();
        let thread = std::thread::spawn(move || {
            loop_context
                .with_thread_default(|| loop_.run())
                .expect("main context acquired");
        });
        Self {
            server,
            context,
            main_loop,
            thread: Some(thread),
            source: Mutex::new(Some(source)),
            port,
            media,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Stops accepting connections and closes every client's connection.
    pub fn stop(&self) {
        if let Some(id) = self.source.lock().unwrap().take()
            && let Some(source) = self.context.find_source_by_id(&id)
        {
            source.destroy();
        }
        let server = self.server.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.context.invoke(move || {
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("clients closed");
    }

    /// Accepts connections again, on the same port.
    pub fn restart(&self) {
        let source = self.server.attach(Some(&self.context)).expect("re-attach");
        *self.source.lock().unwrap() = Some(source);
    }

    /// Silences the newest media without closing anything: the camera stalls.
    pub fn pause_newest(&self) {
        let media = self.media.lock().unwrap();
        let element = media.last().expect("a client has connected");
        let valve = element
            .downcast_ref::<gst::Bin>()
            .and_then(|bin| bin.by_name("valve"))
            .expect("the media has a valve");
        valve.set_property("drop", true);
    }

    pub fn media_served(&self) -> usize {
        self.media.lock().unwrap().len()
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
