#include "node_harness.h"

#include <set>

#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <sstream>
#include <variant>

namespace weft::gossip::test {

MsgType type_of(const Message& m) {
  // Message's alternatives in order; push-pull (8) travels only on the reliable channel.
  static constexpr MsgType kTypes[] = {MsgType::kPing,    MsgType::kIndirectPing, MsgType::kAck,
                                       MsgType::kNack,    MsgType::kAlive,        MsgType::kSuspect,
                                       MsgType::kDead,    MsgType::kSyncDigest};
  static_assert(std::size(kTypes) == std::variant_size_v<Message>);
  return kTypes[m.index()];
}

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  out.reserve(values.size());
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Packet

bool Packet::has(MsgType t) const { return count(t) > 0; }

std::size_t Packet::count(MsgType t) const {
  return static_cast<std::size_t>(
      std::count_if(messages.begin(), messages.end(), [&](const Message& m) { return type_of(m) == t; }));
}

std::size_t Packet::erase_if(const std::function<bool(const Message&)>& pred) {
  const std::size_t before = messages.size();
  std::erase_if(messages, pred);
  const std::size_t removed = before - messages.size();
  if (removed > 0) edited = true;
  return removed;
}

// ---------------------------------------------------------------------------------------------
// Nodes

Harness::Harness(std::size_t nodes, Config cfg, std::uint64_t seed) : cfg_(cfg), seed_(seed) {
  for (std::size_t i = 0; i < nodes; ++i) add_node("n" + std::to_string(i), default_addr(i));
}

Harness::~Harness() = default;

Endpoint Harness::default_addr(std::size_t i) {
  return Endpoint::v4(127, 0, 0, static_cast<std::uint8_t>(i + 1), 7946);
}

std::uint64_t Harness::node_seed(std::size_t i) {
  return seed_ * 1'000'003 + i * 7919 + restarts_++ * 104'729;
}

std::size_t Harness::add_node(std::string name, const Endpoint& addr, std::uint64_t incarnation,
                              std::optional<Config> cfg) {
  const std::size_t i = slots_.size();
  Slot s;
  s.name = name;
  s.addr = addr;
  s.cfg = cfg.value_or(cfg_);
  s.node = std::make_unique<Node>(s.cfg, Self{std::move(name), addr, incarnation, {}}, node_seed(i));
  slots_.push_back(std::move(s));
  return i;
}

void Harness::restart(std::size_t i, std::uint64_t incarnation, std::optional<Endpoint> addr) {
  Slot& s = slots_.at(i);
  if (addr) s.addr = *addr;
  s.node = std::make_unique<Node>(s.cfg, Self{s.name, s.addr, incarnation, {}}, node_seed(i));
  s.up = true;
  s.isolated = false;
}

Node& Harness::node(std::size_t i) { return *slots_.at(i).node; }
const Node& Harness::node(std::size_t i) const { return *slots_.at(i).node; }
const Endpoint& Harness::addr(std::size_t i) const { return slots_.at(i).addr; }
const std::string& Harness::name(std::size_t i) const { return slots_.at(i).name; }
bool Harness::up(std::size_t i) const { return slots_.at(i).up; }

void Harness::join(std::size_t i, const std::vector<std::size_t>& seeds) {
  std::vector<Endpoint> eps;
  for (std::size_t s : seeds) eps.push_back(addr(s));
  node(i).join(now_, eps);
  collect(i);
}

void Harness::join_all() {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].up) continue;
    join(i, i == 0 ? std::vector<std::size_t>{} : std::vector<std::size_t>{0});
  }
}

bool Harness::form_cluster(Duration limit) {
  join_all();
  return run_until([&] { return full_mesh() && quiet(); }, limit);
}

void Harness::leave(std::size_t i) {
  node(i).leave(now_);
  collect(i);
}

Result<void> Harness::set_meta(std::size_t i, std::vector<std::byte> meta) {
  auto r = node(i).set_meta(now_, std::move(meta));
  collect(i);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Clock

TimePoint Harness::next_time() const {
  TimePoint t = TimePoint::max();
  if (!inflight_.empty()) t = inflight_.top().at;
  for (const Slot& s : slots_) {
    if (s.up) t = std::min(t, s.node->next_deadline());
  }
  return t;
}

void Harness::step() {
  while (!inflight_.empty() && inflight_.top().at <= now_) {
    const std::size_t log = inflight_.top().log;
    inflight_.pop();
    deliver(log);
  }
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].up && slots_[i].node->next_deadline() <= now_) {
      (void)slots_[i].node->tick(now_);
      collect(i);
    }
  }
}

void Harness::run_to(TimePoint t) {
  for (;;) {
    const TimePoint next = next_time();
    if (next > t) break;
    now_ = std::max(now_, next);
    step();
  }
  now_ = std::max(now_, t);
}

bool Harness::run_until(const std::function<bool()>& pred, Duration limit) {
  const TimePoint end = now_ + limit;
  if (pred()) return true;
  for (;;) {
    const TimePoint next = next_time();
    if (next > end) break;
    now_ = std::max(now_, next);
    step();
    if (pred()) return true;
  }
  now_ = std::max(now_, end);
  return pred();
}

// ---------------------------------------------------------------------------------------------
// Network

int Harness::lookup(const Endpoint& e) const {
  for (std::size_t i = slots_.size(); i-- > 0;) {
    if (slots_[i].addr == e && slots_[i].up) return static_cast<int>(i);
  }
  for (std::size_t i = slots_.size(); i-- > 0;) {
    if (slots_[i].addr == e) return static_cast<int>(i);
  }
  return -1;
}

void Harness::crash(std::size_t i) { slots_.at(i).up = false; }
void Harness::revive(std::size_t i) { slots_.at(i).up = true; }
void Harness::isolate(std::size_t i, bool on) { slots_.at(i).isolated = on; }

void Harness::cut(std::size_t from, std::size_t to, bool both_ways) {
  cuts_.push_back({from, to});
  if (both_ways) cuts_.push_back({to, from});
}

void Harness::heal() {
  cuts_.clear();
  for (Slot& s : slots_) s.isolated = false;
}

int Harness::add_filter(Filter f) {
  const int id = next_filter_++;
  filters_.emplace_back(id, std::move(f));
  return id;
}

void Harness::remove_filter(int id) {
  std::erase_if(filters_, [&](const auto& p) { return p.first == id; });
}

int Harness::strip(MsgType t, std::optional<std::size_t> from, std::optional<std::size_t> to) {
  return add_filter([t, from, to](Packet& p) {
    if (from && p.from != static_cast<int>(*from)) return false;
    if (to && p.to != static_cast<int>(*to)) return false;
    p.erase_if([t](const Message& m) { return type_of(m) == t; });
    return false;
  });
}

void Harness::collect(std::size_t i) {
  Slot& s = slots_[i];
  for (auto& e : s.node->take_events()) s.events.push_back({now_, std::move(e)});
  for (auto& d : s.node->take_outgoing()) send(static_cast<int>(i), s.addr, std::move(d));
}

void Harness::send(int from, const Endpoint& from_addr, Datagram d) {
  Packet p;
  p.sent = now_;
  p.from = from;
  p.to = lookup(d.to);
  p.from_addr = from_addr;
  p.to_addr = d.to;
  p.channel = d.channel;
  p.bytes = std::move(d.bytes);
  if (p.channel == Channel::kUnreliable) {
    auto decoded = decode_packet(p.bytes);
    if (!decoded) {
      ADD_FAILURE() << "undecodable datagram from " << from_addr.to_string() << ": "
                    << to_string(decoded.error());
    } else {
      p.messages = std::move(decoded->messages);
    }
    if (from >= 0 && p.bytes.size() > slots_[static_cast<std::size_t>(from)].cfg.max_packet_bytes) {
      ADD_FAILURE() << "datagram of " << p.bytes.size() << " bytes from " << from_addr.to_string()
                    << " exceeds max_packet_bytes";
    }
  } else {
    auto decoded = decode_stream(p.bytes);
    if (!decoded) {
      ADD_FAILURE() << "undecodable stream from " << from_addr.to_string() << ": "
                    << to_string(decoded.error());
    } else {
      p.stream = std::move(*decoded);
    }
  }

  // Injected datagrams (from < 0) bypass the network controls.
  if (from >= 0) {
    if (!slots_[static_cast<std::size_t>(from)].up || blocked(from, p.to)) p.dropped = true;
    for (auto& [id, filter] : filters_) {
      if (p.dropped) break;
      if (filter(p)) p.dropped = true;
    }
    if (p.edited && !p.dropped) {
      if (p.messages.empty()) {
        p.dropped = true;
      } else {
        PacketBuilder pb(65000);
        for (const Message& m : p.messages) pb.add(m);
        p.bytes = pb.finish();
      }
    }
  }
  if (p.to < 0) p.dropped = true;  // nobody listens there

  p.arrives = now_ + delay_;
  wire_.push_back(std::move(p));
  const Packet& logged = wire_.back();
  if (!logged.dropped) inflight_.push(InFlight{logged.arrives, order_++, wire_.size() - 1});
}

bool Harness::blocked(int from, int to) const {
  const bool from_known = from >= 0;
  const bool to_known = to >= 0;
  const auto f = static_cast<std::size_t>(from);
  const auto t = static_cast<std::size_t>(to);
  if ((from_known && slots_[f].isolated) || (to_known && slots_[t].isolated)) return true;
  return std::any_of(cuts_.begin(), cuts_.end(), [&](const Cut& c) {
    return from_known && to_known && c.from == f && c.to == t;
  });
}

void Harness::refuse(std::size_t log, std::size_t down) {
  const Packet& d = wire_[log];
  if (!icmp_ || d.icmp || d.from < 0 || d.channel != Channel::kUnreliable) return;
  Packet p;
  p.sent = now_;
  p.arrives = now_ + delay_;
  p.from = static_cast<int>(down);
  p.to = d.from;
  p.from_addr = d.to_addr;
  p.to_addr = d.from_addr;
  p.icmp = true;
  p.dropped = blocked(p.from, p.to);
  for (auto& [id, filter] : filters_) {
    if (p.dropped) break;
    if (filter(p)) p.dropped = true;
  }
  wire_.push_back(std::move(p));  // a deque: `d` stays valid, but is not used past here
  if (!wire_.back().dropped) inflight_.push(InFlight{wire_.back().arrives, order_++, wire_.size() - 1});
}

void Harness::deliver(std::size_t log) {
  Packet& p = wire_[log];
  const int to = lookup(p.to_addr);  // a restarted process may listen there now
  if (to < 0 || !slots_[static_cast<std::size_t>(to)].up) {
    p.dropped = true;
    if (to >= 0) refuse(log, static_cast<std::size_t>(to));  // a host, but no process on the port
    return;
  }
  const auto i = static_cast<std::size_t>(to);
  if (p.icmp) {
    slots_[i].node->handle_unreachable(now_, p.from_addr);
  } else if (p.channel == Channel::kUnreliable) {
    slots_[i].node->handle_packet(now_, p.from_addr, p.bytes);
  } else {
    slots_[i].node->handle_stream(now_, p.from_addr, p.bytes);
  }
  collect(i);
}

void Harness::inject(std::size_t i, const Endpoint& from, const std::vector<Message>& msgs) {
  PacketBuilder pb(65000);
  for (const Message& m : msgs) {
    if (!pb.add(m)) ADD_FAILURE() << "injected message does not fit";
  }
  const std::vector<std::byte> bytes = pb.finish();
  inject_bytes(i, from, bytes);
}

void Harness::inject_bytes(std::size_t i, const Endpoint& from, std::span<const std::byte> bytes) {
  node(i).handle_packet(now_, from, bytes);
  collect(i);
}

void Harness::unreachable(std::size_t i, const Endpoint& to) {
  node(i).handle_unreachable(now_, to);
  collect(i);
}

void Harness::inject_stream(std::size_t i, const Endpoint& from, const PushPull& pp) {
  const std::vector<std::byte> bytes = encode_stream(pp);
  node(i).handle_stream(now_, from, bytes);
  collect(i);
}

// ---------------------------------------------------------------------------------------------
// Observation

std::vector<const Packet*> Harness::sent(std::optional<std::size_t> from, std::optional<std::size_t> to,
                                         MsgType t, TimePoint since) const {
  std::vector<const Packet*> out;
  for (const Packet& p : wire_) {
    if (p.sent < since) continue;
    if (from && p.from != static_cast<int>(*from)) continue;
    if (to && p.to != static_cast<int>(*to)) continue;
    if (p.has(t)) out.push_back(&p);
  }
  return out;
}

std::vector<const Packet*> Harness::probes(std::size_t from, std::size_t to, TimePoint since) const {
  // A relayed ping leaves the moment the ping-req for that target arrives.
  const auto requests = sent(std::nullopt, from, MsgType::kIndirectPing, since - delay_);
  auto relayed = [&](const Packet* ping) {
    return std::any_of(requests.begin(), requests.end(), [&](const Packet* r) {
      const IndirectPing* req = r->find<IndirectPing>();
      return req != nullptr && !r->dropped && r->arrives == ping->sent && req->target == name(to);
    });
  };
  // A retry (Config::probe_retries) repeats the probe's sequence number: it is not a new probe.
  std::vector<const Packet*> out;
  std::set<std::uint32_t> seen;
  for (const Packet* p : sent(from, to, MsgType::kPing, since)) {
    if (relayed(p)) continue;
    const Ping* ping = p->find<Ping>();
    if (ping != nullptr && !seen.insert(ping->seq).second) continue;
    out.push_back(p);
  }
  return out;
}

std::vector<TimePoint> Harness::ping_times(std::size_t from, std::size_t to, TimePoint since) const {
  std::vector<TimePoint> out;
  for (const Packet* p : probes(from, to, since)) out.push_back(p->sent);
  return out;
}

const std::vector<TimedEvent>& Harness::events(std::size_t i) const { return slots_.at(i).events; }

std::vector<TimedEvent> Harness::events_about(std::size_t i, std::string_view member,
                                              std::optional<EventType> type, TimePoint since) const {
  std::vector<TimedEvent> out;
  for (const TimedEvent& e : events(i)) {
    if (e.at < since || e.ev.name != member) continue;
    if (type && e.ev.type != *type) continue;
    out.push_back(e);
  }
  return out;
}

std::optional<TimePoint> Harness::first_event(std::size_t i, std::string_view member, EventType type,
                                              TimePoint since) const {
  auto ev = events_about(i, member, type, since);
  if (ev.empty()) return std::nullopt;
  return ev.front().at;
}

std::optional<MemberState> Harness::state(std::size_t viewer, std::size_t member) const {
  auto m = node(viewer).member(name(member));
  if (!m) return std::nullopt;
  return m->state;
}

bool Harness::full_mesh() const {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].up) continue;
    for (std::size_t j = 0; j < slots_.size(); ++j) {
      if (!slots_[j].up) continue;
      auto m = node(i).member(name(j));
      if (!m || m->state != MemberState::kAlive || m->addr != addr(j)) return false;
    }
  }
  return true;
}

bool Harness::quiet() const {
  return std::all_of(slots_.begin(), slots_.end(),
                     [](const Slot& s) { return !s.up || s.node->queued_broadcasts() == 0; });
}

std::string Harness::dump() const {
  std::ostringstream out;
  out << "t=" << to_seconds(now_ - kEpoch) << "s\n";
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    out << "  " << s.name << " @" << s.addr.to_string() << (s.up ? "" : " (down)")
        << " inc=" << s.node->incarnation() << " health=" << s.node->health_score() << " view:";
    for (const MemberInfo& m : s.node->members()) {
      out << ' ' << m.name << '=' << to_string(m.state) << '/' << m.incarnation;
    }
    out << '\n';
  }
  return out.str();
}

}  // namespace weft::gossip::test
