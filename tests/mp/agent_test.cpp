// Multi-process tests: real `weft agent` processes on 127.0.0.x, bounded in time. The tests
// that need root (a network namespace, nftables) skip without it; CI runs as root.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <map>
#include <memory>
#include <set>
#include <zmq.hpp>

#include "cluster.h"
#include "harness.h"
#include "weft/store/store.h"

namespace weft::mptest {
namespace {

TEST(AgentProcess, TenAgentsJoinCrashRestartLeave) {
  TempDir keys;
  write_key(keys, "key");
  Cluster c(1, 10, keys.path + "/key");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(10); }, 15s)) << c.logs();

  // kill -9: everyone else sees it failed.
  auto& victim = *c.agents[5];
  const auto before = c.agents[0]->members();
  std::uint64_t inc_before = 0;
  for (const json& m : before) {
    if (m["name"] == victim.name) inc_before = m["incarnation"].get<std::uint64_t>();
  }
  victim.kill9();
  ASSERT_TRUE(wait_until([&] { return c.all_see(victim.name, "failed", {5}); }, 20s)) << c.logs();

  // Its database survived the kill.
  {
    auto st = store::Store::open(victim.dir + "/weft.db");
    ASSERT_TRUE(st) << st.error().message;
    EXPECT_TRUE(st->integrity_check());
  }

  // Restart with the same data dir and no --join: it rejoins the members it knew.
  c.start(5, /*join=*/false);
  ASSERT_TRUE(victim.wait_ready());
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(10); }, 20s)) << c.logs();
  for (const json& m : c.agents[0]->members()) {
    if (m["name"] == victim.name) {
      EXPECT_GT(m["incarnation"].get<std::uint64_t>(), inc_before);
    }
  }

  // `weft leave` through the CLI: seen as left, never as failed, and the agent exits 0.
  auto& leaver = *c.agents[7];
  std::atomic<bool> saw_failed{false};
  RunResult r = run({weft_bin(), "leave", "--rpc", leaver.rpc()});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(leaver.wait_exit(10s), 0) << leaver.log();
  const bool left = wait_until(
      [&] {
        for (std::size_t i = 0; i < c.agents.size(); ++i) {
          if (i == 7) continue;
          if (c.agents[i]->status_of(leaver.name) == "failed") saw_failed = true;
        }
        return c.all_see(leaver.name, "left", {7});
      },
      10s);
  EXPECT_TRUE(left) << c.logs();
  EXPECT_FALSE(saw_failed);

  // `weft members --json` has the documented fields.
  RunResult m = run({weft_bin(), "members", "--json", "--rpc", c.agents[0]->rpc()});
  ASSERT_EQ(m.code, 0) << m.out;
  const json arr = json::parse(m.out);
  ASSERT_EQ(arr.size(), 10u);
  for (const json& e : arr) {
    for (const char* f : {"name", "addr", "status", "incarnation"}) EXPECT_TRUE(e.contains(f)) << e.dump();
  }
  RunResult f = run({weft_bin(), "members", "--status", "left", "--rpc", c.agents[0]->rpc()});
  EXPECT_NE(f.out.find(leaver.name), std::string::npos) << f.out;

  // SIGTERM is a graceful leave too.
  c.agents[3]->signal(SIGTERM);
  EXPECT_EQ(c.agents[3]->wait_exit(10s), 0);
  EXPECT_TRUE(wait_until([&] { return c.all_see("n3", "left", {3}); }, 10s)) << c.logs();
}

TEST(AgentProcess, WrongKeyCannotJoinAndIsCounted) {
  TempDir keys;
  write_key(keys, "good");
  write_key(keys, "bad");
  Cluster c(2, 4, keys.path + "/good");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(3, {3}) || c.all_count_alive(4); }, 15s)) << c.logs();
  c.agents[3]->kill9();
  // Agent 3 restarts with a fresh data dir and the wrong key.
  AgentProc intruder("intruder", addr_for(2, 9), c.dir.path + "/intruder");
  intruder.start({"--key-file", keys.path + "/bad", "--join", c.agents[0]->addr});
  ASSERT_TRUE(intruder.wait_ready());
  auto rejected = [&] {
    auto info = c.agents[0]->call("info");
    if (!info) return std::uint64_t{0};
    const json& a = (*info)["stats"]["agent"];
    return a["rejected_datagrams"]["unknown_key"].get<std::uint64_t>() +
           a["rejected_streams"]["unknown_key"].get<std::uint64_t>();
  };
  EXPECT_TRUE(wait_until([&] { return rejected() > 0; }, 10s)) << c.logs();
  // Three seconds on, nobody lists the intruder and it lists nobody alive but itself.
  std::this_thread::sleep_for(3s);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.agents[static_cast<std::size_t>(i)]->status_of("intruder"), std::nullopt);
  EXPECT_EQ(intruder.count("alive"), 1u);
  auto j = intruder.call("join", json{{"addrs", {c.agents[0]->addr}}}, 10s);
  EXPECT_FALSE(j.has_value());  // "no seed answered"
}

TEST(AgentProcess, KeyRotationKeepsEveryoneAlive) {
  TempDir keys;
  write_key(keys, "old");
  const std::string fresh = run({weft_bin(), "keygen"}).out.substr(0, 44);
  Cluster c(3, 4, keys.path + "/old");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(4); }, 15s)) << c.logs();
  const std::string rpc = c.agents[1]->rpc();

  RunResult inst = run({weft_bin(), "keys", "install", fresh, "--rpc", rpc});
  ASSERT_EQ(inst.code, 0) << inst.out << c.logs();
  EXPECT_NE(inst.out.find("4 of 4 members answered"), std::string::npos) << inst.out;
  RunResult list = run({weft_bin(), "keys", "list", "--json", "--rpc", rpc});
  ASSERT_EQ(list.code, 0) << list.out;
  json l = json::parse(list.out);
  ASSERT_EQ(l["keys"].size(), 2u) << l.dump();
  for (const auto& [id, n] : l["keys"].items()) EXPECT_EQ(n.get<int>(), 4) << id;

  RunResult use = run({weft_bin(), "keys", "use", fresh, "--rpc", rpc});
  ASSERT_EQ(use.code, 0) << use.out;
  const std::string old_id = [&] {
    for (const auto& [id, n] : l["keys"].items()) {
      if (id != json::parse(run({weft_bin(), "keys", "list", "--json", "--rpc", rpc}).out)["primary"]) return id;
    }
    return std::string();
  }();
  ASSERT_EQ(old_id.size(), 8u);
  RunResult rm = run({weft_bin(), "keys", "remove", old_id, "--rpc", rpc});
  ASSERT_EQ(rm.code, 0) << rm.out;
  // Removing the primary is refused.
  RunResult bad = run({weft_bin(), "keys", "remove", fresh, "--rpc", rpc});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("primary"), std::string::npos) << bad.out;

  l = json::parse(run({weft_bin(), "keys", "list", "--json", "--rpc", rpc}).out);
  EXPECT_EQ(l["keys"].size(), 1u) << l.dump();
  // Gossip on the new key keeps everyone alive for a few probe rounds.
  std::this_thread::sleep_for(3s);
  EXPECT_TRUE(c.all_count_alive(4)) << c.logs();
  // A restarted member keeps the rotated ring (from its data dir, not --key-file).
  c.agents[2]->kill9();
  c.start(2, false);
  ASSERT_TRUE(c.agents[2]->wait_ready());
  EXPECT_TRUE(wait_until([&] { return c.all_count_alive(4); }, 20s)) << c.logs();
}

// `weft keys use` switches the primary only when every live member reports the key: a member
// that joined after the install (it has only the old key) would otherwise drop everyone's gossip.
TEST(AgentProcess, KeyUseIsRefusedUntilEveryLiveMemberHoldsTheKey) {
  TempDir keys;
  write_key(keys, "old");
  const std::string fresh = run({weft_bin(), "keygen"}).out.substr(0, 44);
  Cluster c(7, 3, keys.path + "/old");
  c.start(0);
  ASSERT_TRUE(c.agents[0]->wait_ready()) << c.logs();
  c.start(1);
  ASSERT_TRUE(c.agents[1]->wait_ready()) << c.logs();
  ASSERT_TRUE(wait_until([&] { return c.agents[0]->count("alive") == 2 && c.agents[1]->count("alive") == 2; }, 15s))
      << c.logs();
  const std::string rpc = c.agents[0]->rpc();
  auto primary_of = [&](std::size_t i) {
    RunResult l = run({weft_bin(), "keys", "list", "--json", "--rpc", c.agents[i]->rpc()});
    return l.code == 0 ? json::parse(l.out)["primary"].get<std::string>() : std::string("(failed)");
  };
  const std::string old_primary = primary_of(0);
  ASSERT_EQ(old_primary.size(), 8u);
  RunResult inst = run({weft_bin(), "keys", "install", fresh, "--rpc", rpc});
  ASSERT_EQ(inst.code, 0) << inst.out;
  // n2 joins late with only the old key.
  c.start(2);
  ASSERT_TRUE(c.agents[2]->wait_ready()) << c.logs();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(3); }, 15s)) << c.logs();

  RunResult use = run({weft_bin(), "keys", "use", fresh, "--rpc", rpc});
  EXPECT_NE(use.code, 0) << use.out;
  EXPECT_NE(use.out.find("not installed on n2"), std::string::npos) << use.out;
  // Nothing changed anywhere: the old key is still everyone's primary, all stay alive.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(primary_of(i), old_primary) << "n" << i;
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(c.all_count_alive(3)) << c.logs();

  // Installed again (now on all three), the switch goes through.
  ASSERT_EQ(run({weft_bin(), "keys", "install", fresh, "--rpc", rpc}).code, 0);
  RunResult use2 = run({weft_bin(), "keys", "use", fresh, "--rpc", rpc});
  ASSERT_EQ(use2.code, 0) << use2.out << c.logs();
  for (std::size_t i = 0; i < 3; ++i) EXPECT_NE(primary_of(i), old_primary) << "n" << i;
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(c.all_count_alive(3)) << c.logs();
}

TEST(AgentProcess, MalformedInputIsCountedAndDropped) {
  TempDir keys;
  write_key(keys, "key");
  Cluster c(4, 2, keys.path + "/key");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(2); }, 15s)) << c.logs();
  auto& a = *c.agents[0];

  // Garbage UDP datagrams.
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(7946);
  const std::string host = a.addr.substr(0, a.addr.find(':'));
  ::inet_pton(AF_INET, host.c_str(), &to.sin_addr);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    std::string junk(static_cast<std::size_t>(rng() % 1400), '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (i % 3 == 0 && !junk.empty()) junk[0] = 1;  // looks sealed: unknown key or auth failure
    ::sendto(fd, junk.data(), junk.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    if (i % 10 == 9) std::this_thread::sleep_for(2ms);  // stay under the receive buffer
  }
  ::close(fd);

  // Garbage, oversized and deeply nested RPC requests. 0xc1 is never valid msgpack; 0x91 is an
  // array of one element: 60 KiB of them nest 60 K deep (once a stack overflow in the parser).
  zmq::context_t ctx;
  for (const auto& [size, fill] : {std::pair<std::size_t, char>{5, '\xc1'}, std::pair<std::size_t, char>{100 * 1024, '\xc1'},
                                   std::pair<std::size_t, char>{60 * 1024, '\x91'}}) {
    zmq::socket_t s(ctx, zmq::socket_type::req);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect("ipc://" + a.rpc());
    std::string junk(size, fill);
    s.send(zmq::buffer(junk));
    zmq::message_t reply;
    EXPECT_TRUE(s.recv(reply).has_value());
  }

  std::this_thread::sleep_for(200ms);
  auto info = a.call("info");
  ASSERT_TRUE(info);
  const json& st = (*info)["stats"]["agent"];
  std::uint64_t rejected = 0;
  for (const auto& [k, v] : st["rejected_datagrams"].items()) rejected += v.get<std::uint64_t>();
  EXPECT_GE(rejected, 150u) << st.dump();
  EXPECT_GE(st["rpc_bad_requests"].get<std::uint64_t>(), 2u);
  EXPECT_GE(st["rpc_oversized"].get<std::uint64_t>(), 1u);
  // Still serving, still a cluster of two.
  EXPECT_EQ(a.count("alive"), 2u);
  EXPECT_TRUE(c.agents[1]->running());
}

// The service catalog: registrations spread to every agent (100 services on one node: more than
// one datagram could hold), deregistration spreads, a crashed node's services turn critical and
// come back, persisted, when it restarts without --join.
TEST(AgentProcess, ServiceCatalogSpreadsPersistsAndFollowsHealth) {
  TempDir keys;
  write_key(keys, "key");
  Cluster c(5, 3, keys.path + "/key");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(3); }, 15s)) << c.logs();
  auto& a0 = *c.agents[0];
  auto& a1 = *c.agents[1];
  auto& a2 = *c.agents[2];

  RunResult r = run({weft_bin(), "service", "register", "web", "--port", "8080", "--tag", "v1", "--rpc", a0.rpc()});
  ASSERT_EQ(r.code, 0) << r.out;
  for (int i = 0; i < 100; ++i) {
    auto reply = a1.call("service.register", json{{"name", "s" + std::to_string(i)}, {"port", 10000 + i}});
    ASSERT_TRUE(reply && reply->contains("registered")) << (reply ? reply->dump() : "no reply");
  }
  auto services_of = [](AgentProc& a) {
    auto reply = a.call("services");
    return reply && reply->contains("services") ? (*reply)["services"] : json::array();
  };
  auto count = [&](AgentProc& a, const std::string& node, const std::string& health) {
    std::size_t n = 0;
    for (const json& s : services_of(a)) n += s["node"] == node && s["health"] == health ? 1u : 0u;
    return n;
  };
  ASSERT_TRUE(wait_until([&] { return count(a2, "n1", "passing") == 100 && count(a2, "n0", "passing") == 1; }, 10s))
      << services_of(a2).dump() << c.logs();
  RunResult j = run({weft_bin(), "services", "--json", "--rpc", a2.rpc()});
  ASSERT_EQ(j.code, 0) << j.out;
  bool found = false;
  for (const json& s : json::parse(j.out)) {
    for (const char* f : {"service", "node", "addr", "health"}) EXPECT_TRUE(s.contains(f)) << s.dump();
    if (s["service"] == "web") {
      found = true;
      EXPECT_EQ(s["node"], "n0");
      EXPECT_EQ(s["addr"], a0.addr.substr(0, a0.addr.rfind(':')) + ":8080");
      EXPECT_EQ(s["tags"], json::array({"v1"}));
    }
  }
  EXPECT_TRUE(found) << j.out;

  // Deregistration spreads; an unknown name is an error with one line.
  ASSERT_TRUE(a1.call("service.deregister", json{{"name", "s0"}}));
  EXPECT_TRUE(wait_until([&] { return count(a2, "n1", "passing") == 99; }, 10s)) << services_of(a2).dump();
  RunResult bad = run({weft_bin(), "service", "deregister", "nope", "--rpc", a1.rpc()});
  EXPECT_NE(bad.code, 0);
  EXPECT_EQ(bad.out.rfind("weft: ", 0), 0u) << bad.out;
  for (const json& params : {json{{"name", "a b"}, {"port", 1}}, json{{"name", "x"}, {"port", 0}},
                             json{{"name", "x"}, {"port", 1}, {"check", "ftp"}}, json{{"port", 5}}}) {
    auto reply = a1.call("service.register", params);
    EXPECT_TRUE(!reply || !reply->contains("registered")) << params.dump();
  }

  // kill -9: its services turn critical everywhere; a restart without --join brings them back.
  a1.kill9();
  EXPECT_TRUE(wait_until([&] { return count(a2, "n1", "critical") == 99; }, 20s)) << services_of(a2).dump();
  c.start(1, /*join=*/false);
  ASSERT_TRUE(a1.wait_ready()) << a1.log();
  EXPECT_TRUE(wait_until([&] { return count(a2, "n1", "passing") == 99 && count(a0, "n1", "passing") == 99; }, 20s))
      << services_of(a2).dump() << c.logs();
}

// Health checks run by the local agent decide what every agent sees: a tcp check follows a real
// listener going away and coming back; exec checks pass on exit 0 only.
TEST(AgentProcess, HealthChecksDecideWhatEveryAgentSees) {
  TempDir keys;
  write_key(keys, "key");
  Cluster c(6, 2, keys.path + "/key");
  c.start_all();
  ASSERT_TRUE(wait_until([&] { return c.all_count_alive(2); }, 15s)) << c.logs();
  auto& a0 = *c.agents[0];
  auto& a1 = *c.agents[1];

  // A listener on 127.0.0.1, port chosen by the system.
  auto listen_on = [](std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    return fd;
  };
  int lfd = listen_on(0);
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&bound), &len), 0);
  const std::uint16_t port = ntohs(bound.sin_port);

  RunResult r = run({weft_bin(), "service", "register", "db", "--port", std::to_string(port), "--check", "tcp",
                     "--interval", "200ms", "--rpc", a0.rpc()});
  ASSERT_EQ(r.code, 0) << r.out;
  for (const auto& [name, check] : {std::pair{"ok", "exec:true"}, std::pair{"bad", "exec:exit 3"}}) {
    ASSERT_TRUE(a0.call("service.register", json{{"name", name}, {"port", 1}, {"check", check}, {"interval", "200ms"}}));
  }
  auto health = [](AgentProc& a, const std::string& service) -> std::string {
    auto reply = a.call("services");
    if (!reply) return "";
    for (const json& s : (*reply)["services"]) {
      if (s["service"] == service) return s["health"].get<std::string>();
    }
    return "absent";
  };
  EXPECT_TRUE(wait_until([&] { return health(a1, "db") == "passing" && health(a1, "ok") == "passing"; }, 10s))
      << a1.call("services")->dump() << c.logs();
  EXPECT_TRUE(wait_until([&] { return health(a1, "bad") == "critical"; }, 5s));

  ::close(lfd);  // the service goes away: critical everywhere
  EXPECT_TRUE(wait_until([&] { return health(a1, "db") == "critical"; }, 10s)) << c.logs();
  lfd = listen_on(port);  // and comes back
  EXPECT_TRUE(wait_until([&] { return health(a1, "db") == "passing"; }, 10s)) << c.logs();
  ::close(lfd);
  EXPECT_EQ(health(a1, "bad"), "critical") << "it never passed";
}

TEST(AgentProcess, BadSettingsExitTwoWithOneLine) {
  TempDir t;
  const std::string dir = t.path + "/d";
  auto one_line = [](const RunResult& r) { return std::count(r.out.begin(), r.out.end(), '\n') == 1; };
  RunResult nokey = run({weft_bin(), "agent", "--node", "a", "--bind", "127.0.0.1:7999", "--data-dir", dir});
  EXPECT_EQ(nokey.code, 2) << nokey.out;
  EXPECT_NE(nokey.out.find("no cluster key"), std::string::npos) << nokey.out;
  EXPECT_TRUE(one_line(nokey)) << nokey.out;
  RunResult badbind = run({weft_bin(), "agent", "--node", "a", "--bind", "nonsense", "--data-dir", dir});
  EXPECT_EQ(badbind.code, 2);
  EXPECT_TRUE(one_line(badbind)) << badbind.out;
  std::ofstream(t.path + "/bad.toml") << "node = \"a\"\nbind = 7\n";
  RunResult badtoml = run({weft_bin(), "agent", "--config", t.path + "/bad.toml", "--data-dir", dir});
  EXPECT_EQ(badtoml.code, 2);
  EXPECT_NE(badtoml.out.find("bind"), std::string::npos) << badtoml.out;
  std::ofstream(t.path + "/k") << "not-a-key\n";
  RunResult badkey = run({weft_bin(), "agent", "--node", "a", "--bind", "127.0.0.1:7999", "--data-dir", dir,
                          "--key-file", t.path + "/k"});
  EXPECT_EQ(badkey.code, 2) << badkey.out;
  RunResult noagent = run({weft_bin(), "members", "--rpc", t.path + "/nothing.sock"});
  EXPECT_EQ(noagent.code, 1);
  EXPECT_EQ(noagent.out.rfind("weft: cannot reach agent at " + t.path + "/nothing.sock: ", 0), 0u) << noagent.out;
}

// The loop reads ZeroMQ's ZMQ_EVENTS only after it touched a socket or its descriptor fired. A
// request it failed to notice would wait for the next wake-up: up to a second on an agent alone,
// which has no peer to probe. Every answer, one client after another and eight at once, must come
// well before that.
TEST(AgentProcess, RpcAnswersPromptlyOnAnAgentThatSleeps) {
  TempDir keys;
  write_key(keys, "key");
  TempDir t;
  AgentProc a("sleeper", addr_for(8, 0), t.path + "/a");
  a.start({"--key-file", keys.path + "/key"});
  ASSERT_TRUE(a.wait_ready()) << a.log();
  std::this_thread::sleep_for(1500ms);  // the join is over: the loop sleeps its full second
  auto slowest = std::chrono::steady_clock::duration::zero();
  for (int i = 0; i < 30; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(a.call("members")) << a.log();
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    if (i % 10 == 9) std::this_thread::sleep_for(1100ms);  // let it fall asleep again
  }
  EXPECT_LT(slowest, 500ms);
  std::atomic<int> answered{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (a.call("members")) ++answered;
      }
    });
  }
  for (auto& th : clients) th.join();
  EXPECT_EQ(answered.load(), 40);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST(AgentProcess, SighupReloadsTagsAndRpcPathIsGuarded) {
  TempDir keys;
  write_key(keys, "key");
  TempDir t;
  const std::string cfg = t.path + "/weft.toml";
  std::ofstream(cfg) << "tags = { role = \"web\" }\n";
  AgentProc a("solo", addr_for(5, 0), t.path + "/a");
  a.start({"--key-file", keys.path + "/key", "--config", cfg, "--log-json"});
  ASSERT_TRUE(a.wait_ready()) << a.log();
  auto role = [&] {
    for (const json& m : a.members()) {
      if (m["name"] == "solo" && m["tags"].contains("role")) return m["tags"]["role"].get<std::string>();
    }
    return std::string();
  };
  EXPECT_EQ(role(), "web");
  std::ofstream(cfg) << "tags = { role = \"db\" }\n";
  a.signal(SIGHUP);
  EXPECT_TRUE(wait_until([&] { return role() == "db"; }, 5s)) << a.log();
  // A broken file on SIGHUP keeps the running settings and the agent.
  std::ofstream(cfg) << "tags = nonsense\n";
  a.signal(SIGHUP);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(role(), "db");

  // A second agent on the same data dir is refused.
  RunResult same = run({weft_bin(), "agent", "--node", "other", "--bind", addr_for(5, 1), "--data-dir", a.dir,
                        "--key-file", keys.path + "/key"});
  EXPECT_EQ(same.code, 1);
  EXPECT_NE(same.out.find("another agent"), std::string::npos) << same.out;
  // An --rpc path that is a symlink, or in a directory others can enter, is refused.
  std::filesystem::create_directories(t.path + "/open");
  std::filesystem::permissions(t.path + "/open", std::filesystem::perms::all);
  RunResult open_dir = run({weft_bin(), "agent", "--node", "b", "--bind", addr_for(5, 2), "--data-dir", t.path + "/b",
                            "--key-file", keys.path + "/key", "--rpc", t.path + "/open/rpc.sock"});
  EXPECT_EQ(open_dir.code, 1);
  EXPECT_NE(open_dir.out.find("owner-only"), std::string::npos) << open_dir.out;
  std::filesystem::create_directories(t.path + "/priv");
  std::filesystem::permissions(t.path + "/priv", std::filesystem::perms::owner_all);
  std::filesystem::create_symlink(t.path + "/elsewhere.sock", t.path + "/priv/rpc.sock");
  RunResult link = run({weft_bin(), "agent", "--node", "c", "--bind", addr_for(5, 3), "--data-dir", t.path + "/c",
                        "--key-file", keys.path + "/key", "--rpc", t.path + "/priv/rpc.sock"});
  EXPECT_EQ(link.code, 1);
  EXPECT_NE(link.out.find("symlink"), std::string::npos) << link.out;
  // The agent's own socket and data dir are owner-only.
  struct stat st {};
  ASSERT_EQ(::stat(a.rpc().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(a.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((a.dir + "/weft.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
  a.signal(SIGTERM);
  EXPECT_EQ(a.wait_exit(10s), 0);
  // --log-json: every line the agent logged is one JSON object with the documented fields.
  std::istringstream lines(a.log());
  std::size_t n = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* f : {"time", "level", "logger", "msg"}) EXPECT_TRUE(j.contains(f)) << line;
    ++n;
  }
  EXPECT_GE(n, 3u);  // started, reloaded, reload failed, leaving, stopped
}

// A network namespace of our own with lo up, removed (with its nftables tables) at the end.
std::string ns_addr(int i) { return "127.0.0." + std::to_string(i + 1) + ":7946"; }

// Ten agents in a namespace; the config file (TOML) shortens the reconnect interval.
struct NsCluster {
  explicit NsCluster(NetNs& ns) : ns_(ns) {
    write_key(dir, "key");
    std::ofstream(dir.path + "/weft.toml") << "key_file = \"" << dir.path << "/key\"\n"
                                           << "join = [\"" << ns_addr(0) << "\"]\n"
                                           << "log_level = \"info\"\n"
                                           << "[gossip]\nreconnect_interval = \"5s\"\n";
    for (int i = 0; i < 10; ++i) {
      agents.push_back(std::make_unique<AgentProc>("n" + std::to_string(i), ns_addr(i), dir.path + "/n" + std::to_string(i)));
    }
  }
  // Starts all ten and waits until every one sees ten alive.
  void start_all() {
    for (auto& a : agents) a->start({"--config", dir.path + "/weft.toml"}, ns_.name);
    for (auto& a : agents) ASSERT_TRUE(a->wait_ready()) << a->log();
    ASSERT_TRUE(wait_until([&] { return everyone_sees(10); }, 20s)) << logs();
  }
  bool everyone_sees(std::size_t alive) {
    return std::all_of(agents.begin(), agents.end(), [&](auto& a) { return a->count("alive") == alive; });
  }
  std::string logs() {
    std::string s;
    for (auto& a : agents) s += "---- " + a->name + "\n" + a->log();
    return s;
  }
  NetNs& ns_;
  TempDir dir;
  std::vector<std::unique_ptr<AgentProc>> agents;
};

// Ten agents converged in a fresh namespace; skips without root.
#define WEFT_NETNS_CLUSTER(ns, c)                                                 \
  if (!have_root_tools()) GTEST_SKIP() << "needs root and nft (CI runs as root)"; \
  NetNs ns;                                                                       \
  ASSERT_TRUE(ns.ok);                                                             \
  NsCluster c(ns);                                                                \
  ASSERT_NO_FATAL_FAILURE(c.start_all())

TEST(AgentNetns, PartitionThreeOfTenThenHeal) {
  WEFT_NETNS_CLUSTER(ns, c);

  // Cut 127.0.0.1-3 from 127.0.0.4-10 both ways (UDP and TCP).
  ASSERT_TRUE(ns.input_rules("weft_partition",
                             "    ip saddr 127.0.0.1-127.0.0.3 ip daddr 127.0.0.4-127.0.0.10 drop\n"
                             "    ip saddr 127.0.0.4-127.0.0.10 ip daddr 127.0.0.1-127.0.0.3 drop\n"));
  // Longer than the suspicion timeout: each side sees the other failed.
  auto split = [&] {
    for (int i = 0; i < 10; ++i) {
      const std::size_t expect = i < 3 ? 3 : 7;
      if (c.agents[static_cast<std::size_t>(i)]->count("alive") != expect) return false;
    }
    return true;
  };
  ASSERT_TRUE(wait_until(split, 60s)) << c.logs();
  ASSERT_TRUE(ns.nft("delete table inet weft_partition\n"));
  // Healed: one cluster again, through reconnect syncs and rejoins.
  EXPECT_TRUE(wait_until([&] { return c.everyone_sees(10); }, 60s)) << c.logs();
}

TEST(AgentNetns, TenPercentLossAndAStallMarkNobodyFailed) {
  WEFT_NETNS_CLUSTER(ns, c);
  ASSERT_TRUE(ns.input_rules("weft_loss", "    numgen random mod 100 < 10 drop\n"));
  std::set<std::string> failed;
  auto watch = [&] {
    for (auto& a : c.agents) {
      for (const json& m : a->members()) {
        if (m["status"] == "failed") failed.insert(a->name + " saw " + m["name"].get<std::string>());
      }
    }
    return false;
  };
  wait_until(watch, 20s);
  // A 2.5 s stall of one agent in the middle of the loss.
  c.agents[4]->signal(SIGSTOP);
  wait_until(watch, 2500ms);
  c.agents[4]->signal(SIGCONT);
  wait_until(watch, 25s);
  std::string list;
  for (const std::string& f : failed) list += f + "; ";
  EXPECT_TRUE(failed.empty()) << list << c.logs();
  // ~50 s into the run (past every periodic chore of the agent): the event loop still wakes only
  // for datagrams and timers, a few dozen times a second at most even under this loss.
  for (auto& a : c.agents) {
    auto info = a->call("info");
    ASSERT_TRUE(info) << a->name;
    const auto wakeups = (*info)["stats"]["agent"]["loop_wakeups"].get<std::uint64_t>();
    EXPECT_LT(wakeups, 100u * 60u) << a->name << " woke " << wakeups << " times";
  }
}

}  // namespace
}  // namespace weft::mptest
