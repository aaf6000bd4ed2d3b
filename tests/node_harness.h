#pragma once
// A deterministic harness for Node tests: a few nodes on a fake clock and a fake network.
//
// Time is virtual: run_*() jump to the earlier of the next delivery and the next node deadline,
// so a run is a pure function of the seed and the controls below; nothing sleeps or reads a
// clock. Every datagram a node sends is decoded and kept in a wire log (flagged when dropped),
// so tests assert what was sent, to whom, when, and in which order. Two invariants are checked
// on every datagram: it decodes, and an unreliable one fits the sender's max_packet_bytes.
//
// Node i is named "n<i>" at 127.0.0.<i+1>:7946 unless added with another name or address.
//
// ICMP (set_icmp): a datagram that reaches a stopped node's address draws a "port unreachable"
// back to its sender one delay later (a Packet with icmp set), which the sender's Node gets as
// handle_unreachable(now, address). Isolation, cuts and filters apply to it as to a datagram.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/gossip/codec.h"
#include "weft/gossip/node.h"

namespace weft::gossip::test {

using namespace std::chrono_literals;

// Virtual time starts here (not at TimePoint{}: "zero" would hide arithmetic on defaults).
inline constexpr TimePoint kEpoch = TimePoint(std::chrono::hours(1000));

MsgType type_of(const Message& m);
std::vector<std::byte> bytes_of(std::initializer_list<int> values);

// One datagram on the fake wire.
struct Packet {
  TimePoint sent{};
  TimePoint arrives{};  // when delivered (unless dropped)
  int from = -1;        // node index; -1 = injected by the test
  int to = -1;          // node index; -1 = nobody listens at to_addr
  Endpoint from_addr;
  Endpoint to_addr;
  Channel channel = Channel::kUnreliable;
  std::vector<std::byte> bytes;
  std::vector<Message> messages;   // decoded datagram (unreliable channel)
  std::optional<PushPull> stream;  // decoded stream (reliable channel)
  bool dropped = false;
  bool edited = false;  // a filter removed messages; `bytes` were re-encoded
  // An ICMP "port unreachable" from the host of `from` / `from_addr` (a stopped node) to the node
  // that sent it a datagram: no bytes, no messages.
  bool icmp = false;

  [[nodiscard]] bool has(MsgType t) const;
  [[nodiscard]] std::size_t count(MsgType t) const;
  // Removes the messages matching `pred`; returns how many.
  std::size_t erase_if(const std::function<bool(const Message&)>& pred);
  template <typename T>
  [[nodiscard]] const T* find() const {
    for (const Message& m : messages) {
      if (const T* p = std::get_if<T>(&m)) return p;
    }
    return nullptr;
  }
};

struct TimedEvent {
  TimePoint at;
  MemberEvent ev;
};

class Harness {
 public:
  // A filter sees each datagram as it is sent, after crashes, isolation and cuts. It drops the
  // datagram by returning true, or edits it through Packet::erase_if (an emptied one is dropped).
  using Filter = std::function<bool(Packet&)>;

  explicit Harness(std::size_t nodes, Config cfg = {}, std::uint64_t seed = 1);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  // --- nodes ---
  static Endpoint default_addr(std::size_t i);  // 127.0.0.<i+1>:7946
  // Adds a node (not started); returns its index.
  std::size_t add_node(std::string name, const Endpoint& addr, std::uint64_t incarnation = 0,
                       std::optional<Config> cfg = std::nullopt);
  // Replaces node i by a fresh process with the same name (a restart); not started.
  void restart(std::size_t i, std::uint64_t incarnation, std::optional<Endpoint> addr = std::nullopt);
  [[nodiscard]] Node& node(std::size_t i);
  [[nodiscard]] const Node& node(std::size_t i) const;
  [[nodiscard]] std::size_t size() const { return slots_.size(); }
  [[nodiscard]] const Endpoint& addr(std::size_t i) const;
  [[nodiscard]] const std::string& name(std::size_t i) const;
  [[nodiscard]] bool up(std::size_t i) const;
  // node(i).join(now, seeds) and sends what it queued.
  void join(std::size_t i, const std::vector<std::size_t>& seeds);
  void join_all();  // node 0 starts the cluster, the others join through it
  // join_all, then runs until every up node sees every up node alive and no broadcast is queued.
  [[nodiscard]] bool form_cluster(Duration limit = 30s);
  void leave(std::size_t i);
  Result<void> set_meta(std::size_t i, std::vector<std::byte> meta);

  // --- clock ---
  [[nodiscard]] TimePoint now() const { return now_; }
  void run_for(Duration d) { run_to(now_ + d); }
  void run_to(TimePoint t);
  // Runs until pred() holds (checked after every step) or `limit` has passed; returns pred().
  bool run_until(const std::function<bool()>& pred, Duration limit);

  // --- network ---
  void set_delay(Duration d) { delay_ = d; }
  void crash(std::size_t i);   // the process stops: no ticks, everything to and from it is lost
  void revive(std::size_t i);  // the stopped process runs on (the same Node object)
  void isolate(std::size_t i, bool on = true);  // the node runs, all its traffic is lost
  void cut(std::size_t from, std::size_t to, bool both_ways = true);  // datagrams from -> to lost
  void heal();  // removes isolation and cuts (not filters)
  // Stopped nodes draw ICMP "port unreachable" reports (off by default: a crash is silent).
  void set_icmp(bool on) { icmp_ = on; }
  int add_filter(Filter f);
  void remove_filter(int id);
  void clear_filters() { filters_.clear(); }
  // Removes messages of type t from datagrams (optionally only from / to one node).
  int strip(MsgType t, std::optional<std::size_t> from = std::nullopt,
            std::optional<std::size_t> to = std::nullopt);

  // --- injection: as if a datagram / stream arrived now at node i from `from` ---
  void inject(std::size_t i, const Endpoint& from, const std::vector<Message>& msgs);
  void inject_bytes(std::size_t i, const Endpoint& from, std::span<const std::byte> bytes);
  void inject_stream(std::size_t i, const Endpoint& from, const PushPull& pp);
  // As if node i's transport saw "port unreachable" for a datagram it sent to `to`, now.
  void unreachable(std::size_t i, const Endpoint& to);

  // --- observation ---
  [[nodiscard]] const std::deque<Packet>& wire() const { return wire_; }
  // Datagrams sent by node `from` to node `to` (either may be nullopt = any) at or after `since`
  // holding a message of type t. Dropped ones are included: they were sent.
  [[nodiscard]] std::vector<const Packet*> sent(std::optional<std::size_t> from,
                                                std::optional<std::size_t> to, MsgType t,
                                                TimePoint since = kEpoch) const;
  // Pings `from` sent to `to` as its own probes (not relayed for someone else's ping-req; a
  // retry of a probe, with the same sequence number, is not listed again).
  [[nodiscard]] std::vector<const Packet*> probes(std::size_t from, std::size_t to,
                                                  TimePoint since = kEpoch) const;
  [[nodiscard]] std::vector<TimePoint> ping_times(std::size_t from, std::size_t to,
                                                  TimePoint since = kEpoch) const;
  [[nodiscard]] const std::vector<TimedEvent>& events(std::size_t i) const;
  // Events node i emitted about `member` (by name), optionally of one type, at or after `since`.
  [[nodiscard]] std::vector<TimedEvent> events_about(std::size_t i, std::string_view member,
                                                     std::optional<EventType> type = std::nullopt,
                                                     TimePoint since = kEpoch) const;
  [[nodiscard]] std::optional<TimePoint> first_event(std::size_t i, std::string_view member, EventType type,
                                                     TimePoint since = kEpoch) const;
  // What node `viewer` believes about node `member`'s state (nullopt: unknown).
  [[nodiscard]] std::optional<MemberState> state(std::size_t viewer, std::size_t member) const;
  [[nodiscard]] bool full_mesh() const;
  [[nodiscard]] bool quiet() const;  // no node has a queued broadcast
  [[nodiscard]] std::string dump() const;

 private:
  struct Slot {
    std::unique_ptr<Node> node;
    std::string name;
    Endpoint addr;
    Config cfg;
    bool up = true;
    bool isolated = false;
    std::vector<TimedEvent> events;
  };
  struct InFlight {
    TimePoint at;
    std::uint64_t order;
    std::size_t log;  // index into wire_
    friend bool operator>(const InFlight& a, const InFlight& b) {
      return a.at != b.at ? a.at > b.at : a.order > b.order;
    }
  };
  struct Cut {
    std::size_t from;
    std::size_t to;
  };

  [[nodiscard]] int lookup(const Endpoint& e) const;
  void collect(std::size_t i);  // moves node i's outgoing datagrams onto the wire and its events out
  void send(int from, const Endpoint& from_addr, Datagram d);
  // Node `down` got a datagram (wire_[log]) while stopped: its host answers the sender.
  void refuse(std::size_t log, std::size_t down);
  // Isolation and cuts from node `from` to node `to` (either may be -1: unknown).
  [[nodiscard]] bool blocked(int from, int to) const;
  void deliver(std::size_t log);
  void step();  // processes everything due at now_
  [[nodiscard]] TimePoint next_time() const;
  [[nodiscard]] std::uint64_t node_seed(std::size_t i);

  Config cfg_;
  std::uint64_t seed_;
  std::uint64_t restarts_ = 0;
  TimePoint now_ = kEpoch;
  Duration delay_ = 1ms;
  bool icmp_ = false;
  std::vector<Slot> slots_;
  std::deque<Packet> wire_;
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>> inflight_;
  std::uint64_t order_ = 0;
  std::vector<Cut> cuts_;
  std::vector<std::pair<int, Filter>> filters_;
  int next_filter_ = 1;
};

}  // namespace weft::gossip::test
