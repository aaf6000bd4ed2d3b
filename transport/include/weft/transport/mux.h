#pragma once
// Stream multiplexer of the mesh data plane: many app byte streams over one pooled, encrypted
// connection per peer (yamux / HTTP/2 framing, simplified; frames in mux_frame.h). Pure logic:
// no sockets, threads or clocks. The record layer below feeds received plaintext to on_bytes()
// and sends what take_output() appends; the agent above reacts to take_events().
//
// Streams. The initiator of the connection opens odd ids (1, 3, …), the responder even ids
// (2, 4, …); ids only grow. An opener sends OPEN and may send DATA right after it (no round trip).
// FIN half-closes one direction; a stream is forgotten once FIN went both ways, or after a RESET
// either way (StreamClosed). Frames for a forgotten stream are ignored (they were in flight).
//
// Flow control, per stream and per direction. Every stream starts with kInitialWindow bytes of
// credit each way (a protocol constant, so the two ends never disagree); a receiver configured
// with a larger receive_window grants the difference with a WINDOW_UPDATE when the stream starts.
// write() accepts at most the remaining credit: the rest stays with the caller (backpressure).
// The receiver returns credit only for bytes the app consumed (consume()), in one WINDOW_UPDATE
// per half window, so the bytes received but not consumed on a stream never exceed its window,
// however slow the app reads. A peer that sends beyond its credit breaks the protocol.
//
// Errors. A malformed or out-of-state frame is fatal for the session: on_bytes returns the
// MuxError (counted), a GOAWAY(protocol_error) is queued for output, and the session stays
// failed. The caller flushes the output and closes the connection.
//
// Output. Control frames (OPEN, WINDOW_UPDATE, RESET, PING, PONG, GOAWAY) leave first, then DATA
// round-robin between streams in chunks of at most max_chunk bytes, so a bulk stream cannot
// starve the others; take_output's budget lets the caller take only what its socket accepts.
// Peer-triggered control frames (PONG, RESET(refused)) grow with the input: a caller that cannot
// send should stop reading until pending_output() shrinks.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <span>
#include <variant>
#include <vector>

#include "weft/base/result.h"
#include "weft/transport/mux_frame.h"

namespace weft::transport {

inline constexpr std::uint32_t kInitialWindow = 256 * 1024;
inline constexpr std::uint32_t kMaxWindow = 0x7fffffff;  // credit never exceeds this

enum class MuxRole : std::uint8_t { kInitiator, kResponder };

struct MuxConfig {
  std::uint32_t receive_window = kInitialWindow;  // per stream; raised to kInitialWindow if lower
  std::size_t max_streams = 256;                  // live streams, opened by either end
  std::size_t max_chunk = kMaxFramePayload;       // DATA payload per frame, 1 .. kMaxFramePayload
};

struct MuxStats {
  std::array<std::uint64_t, kFrameTypeCount> frames_in{};  // indexed by FrameType
  std::array<std::uint64_t, kFrameTypeCount> frames_out{}; // control frames count when queued
  std::uint64_t bytes_in = 0;                // wire bytes given to on_bytes
  std::uint64_t bytes_out = 0;               // wire bytes appended by take_output
  std::uint64_t data_bytes_in = 0;           // DATA payload
  std::uint64_t data_bytes_out = 0;
  std::uint64_t streams_opened_local = 0;
  std::uint64_t streams_opened_remote = 0;   // accepted OPENs (refused ones not included)
  std::uint64_t streams_closed = 0;          // forgotten, whatever the reason
  std::array<std::uint64_t, kResetReasonCount> resets_sent{};  // includes refused OPENs
  std::array<std::uint64_t, kResetReasonCount> resets_received{};
  std::uint64_t resets_received_unknown = 0; // reasons this build does not know
  std::array<std::uint64_t, kMuxErrorCount> protocol_errors{};  // indexed by MuxError
  std::uint64_t window_stalls = 0;           // write() calls cut short by the peer's window
  std::uint64_t frames_ignored = 0;          // for streams already forgotten
};

// Events for the caller, in the order they happened.
struct StreamOpened { StreamId id; std::vector<std::byte> payload; };  // by the peer
// The bytes of one DATA frame, not copied: a view into the bytes given to on_bytes() (or into the
// decoder, for a frame that came in pieces), valid until the next on_bytes(). consume() them
// when delivered.
struct StreamData { StreamId id; std::span<const std::byte> bytes; };
struct StreamFin { StreamId id; };                                     // peer sends no more
struct StreamReset { StreamId id; ResetReason reason; };               // by the peer
struct StreamWritable { StreamId id; };  // credit came back after a write() was cut short
struct Pong { std::uint64_t payload; };
struct GoAway { GoAwayReason reason; };                                // the peer opens no more
struct StreamClosed { StreamId id; };                                  // forgotten: id is dead
using MuxEvent = std::variant<StreamOpened, StreamData, StreamFin, StreamReset, StreamWritable, Pong,
                              GoAway, StreamClosed>;

class MuxSession {
 public:
  MuxSession(MuxRole role, MuxConfig cfg = {});

  // Opens a stream (OPEN carries `open_payload`, at most kMaxOpenPayload bytes). Fails when the
  // stream limit is reached, after a GOAWAY either way, on a failed session or when ids run out.
  Result<StreamId> open_stream(std::span<const std::byte> open_payload);
  // Queues up to the stream's remaining credit; returns how many bytes were taken (0 for an
  // unknown stream or after shutdown_write). A short count means: wait for StreamWritable.
  std::size_t write(StreamId id, std::span<const std::byte> bytes);
  // Room for up to `n` bytes (at most the credit) at the end of the stream's queue, for the
  // caller to fill in place (recv into it) and then pass to commit_write(); empty when the queue
  // would have to grow for it (then write() from the caller's own buffer instead), for an
  // unknown stream or after shutdown_write. Valid until the next call on this session.
  [[nodiscard]] std::span<std::byte> write_space(StreamId id, std::size_t n);
  // Takes the first `n` bytes of the last write_space() (n <= its size), as write() would.
  void commit_write(StreamId id, std::size_t n);
  // Frees the send queue of every stream that has nothing queued and had nothing written since
  // the last call (its room would otherwise stay allocated while the stream idles). Returns the
  // number of streams still holding a queue.
  std::size_t release_idle_buffers();
  // Room allocated for the streams' send queues.
  [[nodiscard]] std::size_t send_buffer_bytes() const;
  // FIN after the bytes already written.
  void shutdown_write(StreamId id);
  // RESET now: queued data is dropped and the stream forgotten. Unknown ids are ignored.
  void reset(StreamId id, ResetReason reason);
  // The app took `n` more received bytes of the stream: credit goes back to the peer. More than
  // was received and not yet consumed is a caller bug (WEFT_CHECK). Forgotten ids are ignored.
  void consume(StreamId id, std::size_t n);
  void ping(std::uint64_t payload);
  void go_away(GoAwayReason reason = GoAwayReason::kNormal);

  // Feeds received bytes, in chunks of any size. Frames before a bad one take effect. The
  // StreamData events point into `bytes`: keep them alive until the events are handled.
  Result<void, MuxError> on_bytes(std::span<const std::byte> bytes);
  // Appends frames ready to send: control frames all, then DATA while it fits in `max_bytes`
  // (control frames are never held back). Returns the bytes appended.
  std::size_t take_output(std::vector<std::byte>& out,
                          std::size_t max_bytes = std::numeric_limits<std::size_t>::max());
  // The same without copying DATA payloads: control frames and frame headers are appended to
  // `small`, and `pieces` gets, in order, the byte ranges to send: views into `small` or into the
  // streams' send queues, valid until the next call on this session or change to `small`.
  // Returns the bytes listed.
  std::size_t take_output(std::vector<std::byte>& small, std::vector<std::span<const std::byte>>& pieces,
                          std::size_t max_bytes = std::numeric_limits<std::size_t>::max());
  [[nodiscard]] std::vector<MuxEvent> take_events();
  void take_events(std::vector<MuxEvent>& out);  // the same into `out` (replaced), no allocation

  [[nodiscard]] std::size_t live_streams() const { return streams_.size(); }
  [[nodiscard]] bool has_stream(StreamId id) const { return streams_.count(id) != 0; }
  // Received, not yet consumed bytes of a stream (<= its receive window); 0 if unknown.
  [[nodiscard]] std::size_t unconsumed(StreamId id) const;
  // Credit the peer gave us on a stream minus what write() already took; 0 if unknown.
  [[nodiscard]] std::size_t send_credit(StreamId id) const;
  // Bytes take_output would append without a budget.
  [[nodiscard]] std::size_t pending_output() const;
  [[nodiscard]] bool failed() const { return failed_; }
  [[nodiscard]] bool going_away() const { return sent_goaway_ || received_goaway_; }
  [[nodiscard]] const MuxStats& stats() const { return stats_; }

 private:
  struct Stream {
    std::uint32_t send_credit = kInitialWindow;  // what write() may still take
    // Taken, not yet framed: send_buf[send_head, send_tail). send_buf's size is its allocated
    // room (zeroed once when it grows), so write_space() hands out room without touching it.
    std::vector<std::byte> send_buf;
    std::size_t send_head = 0;
    std::size_t send_tail = 0;
    [[nodiscard]] std::size_t pending() const { return send_tail - send_head; }
    bool written = false;  // since the last release_idle_buffers()
    bool fin_queued = false;    // shutdown_write called
    bool fin_sent = false;
    bool remote_fin = false;
    bool stalled = false;       // a write was cut short: StreamWritable when credit returns
    bool in_ready = false;      // listed in ready_
    std::uint32_t recv_credit = kInitialWindow;  // what the peer may still send
    std::uint32_t unconsumed = 0;                // received, not yet consumed
    std::uint32_t to_grant = 0;                  // consumed, not yet granted back
  };

  Result<void, MuxError> handle(const FrameView& f);
  Result<void, MuxError> on_open(const FrameView& f);
  Result<void, MuxError> on_stream_frame(const FrameView& f, Stream& s);
  // The stream of a stream frame; nullptr when it was forgotten (the frame is ignored); an error
  // when it never existed.
  Result<Stream*, MuxError> find_for_frame(StreamId id);
  Result<void, MuxError> fail_session(MuxError e);
  Stream& add_stream(StreamId id);
  void close_stream(StreamId id);  // forgets it and reports StreamClosed
  void close_if_done(StreamId id, const Stream& s);
  void mark_ready(StreamId id, Stream& s);
  void grant(StreamId id, Stream& s, std::uint32_t credit);
  void control(FrameType type, StreamId stream, std::span<const std::byte> payload);
  void send_reset(StreamId id, ResetReason reason);
  [[nodiscard]] bool ours(StreamId id) const { return (id % 2 == 1) == (role_ == MuxRole::kInitiator); }

  MuxRole role_;
  MuxConfig cfg_;
  FrameDecoder decoder_;
  std::map<StreamId, Stream> streams_;
  std::deque<StreamId> ready_;          // streams with DATA or a FIN to frame, round-robin
  std::vector<std::byte> control_out_;  // control frames, sent before any DATA
  std::vector<MuxEvent> events_;
  // Send queues of streams closed while take_output listed views into them: kept until the next
  // take_output (or release_idle_buffers) so the views stay valid.
  bool listing_output_ = false;
  std::vector<std::vector<std::byte>> retired_;
  // take_output's list while `small` may still grow: a view, or (view == nullptr) a range of it.
  struct OutputPiece {
    const std::byte* view = nullptr;
    std::size_t offset = 0;
    std::size_t size = 0;
  };
  std::vector<OutputPiece> listed_;
  std::vector<std::byte> copy_small_;  // take_output(out): the gathered form, then copied
  std::vector<std::span<const std::byte>> copy_pieces_;
  StreamId last_local_id_ = 0;          // highest id we opened; 0: none yet
  StreamId last_peer_id_ = 0;           // highest id the peer opened (accepted or refused)
  bool sent_goaway_ = false;
  bool received_goaway_ = false;
  bool failed_ = false;
  MuxError error_ = MuxError::kUnknownType;
  MuxStats stats_;
};

}  // namespace weft::transport
