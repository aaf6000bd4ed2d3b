// Service catalog and data plane subcommands: `weft service register|deregister`, `weft services`,
// `weft upstream add|remove`, `weft upstreams`, `weft routes`, `weft stats`.

// GCC 12 reports a false "potential null pointer dereference" inside CLI11's inline string code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "client.h"
#include "commands.h"

namespace weft::cli {

namespace {

struct RegisterArgs {
  std::string name;
  unsigned port = 0;
  std::vector<std::string> tags;
  std::string check;
  std::string interval;
  std::string deregister_name;
};

Command service_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  auto a = std::make_shared<RegisterArgs>();
  CLI::App* app = parent.add_subcommand("service", "Register or deregister a service on this node");
  app->require_subcommand(1);
  CLI::App* reg = app->add_subcommand("register", "Declare a local service (persisted; spread to every agent)");
  add_client_options(reg, *o, false);
  reg->add_option("name", a->name, "Service name")->required();
  reg->add_option("--port", a->port, "The service's local port (on 127.0.0.1)")->required()->check(CLI::Range(1, 65535));
  reg->add_option("--tag", a->tags, "A tag (repeatable)");
  reg->add_option("--check", a->check, "Health check: tcp, http://127.0.0.1:PORT/PATH or exec:COMMAND");
  reg->add_option("--interval", a->interval, "Time between checks (default 10s)");
  CLI::App* dereg = app->add_subcommand("deregister", "Remove a service from this node");
  add_client_options(dereg, *o, false);
  dereg->add_option("name", a->deregister_name, "Service name")->required();
  return Command{app, [o, a, reg] {
                   if (reg->parsed()) {
                     json params{{"name", a->name}, {"port", a->port}, {"tags", a->tags}, {"check", a->check}};
                     if (!a->interval.empty()) params["interval"] = a->interval;
                     auto r = call(*o, "service.register", params);
                     if (!r) return kExitFailure;
                     std::printf("registered service %s\n", a->name.c_str());
                     return kExitOk;
                   }
                   auto r = call(*o, "service.deregister", json{{"name", a->deregister_name}});
                   if (!r) return kExitFailure;
                   std::printf("deregistered service %s\n", a->deregister_name.c_str());
                   return kExitOk;
                 }};
}

std::string join(const json& arr) {
  std::string s;
  if (!arr.is_array()) return s;
  for (const json& t : arr) {
    if (!s.empty()) s += ",";
    s += t.is_string() ? t.get<std::string>() : t.dump();
  }
  return s;
}

Command services_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("services", "The whole catalog: every service on every node, with health");
  add_client_options(app, *o, true);
  return Command{app, [o] {
                   auto r = call(*o, "services", json::object());
                   if (!r) return kExitFailure;
                   const json& list = (*r)["services"];
                   if (o->json) {
                     print_json(list);
                     return kExitOk;
                   }
                   std::vector<std::vector<std::string>> rows = {{"SERVICE", "NODE", "ADDRESS", "HEALTH", "TAGS"}};
                   for (const json& s : list) {
                     rows.push_back({s.value("service", ""), s.value("node", ""), s.value("addr", ""),
                                     s.value("health", ""), join(s.value("tags", json::array()))});
                   }
                   print_table(rows);
                   return kExitOk;
                 }};
}

struct UpstreamArgs {
  std::string name;
  std::string listen;
  std::string balance = "peak-ewma";
  std::string as;
  std::string remove_name;
};

Command upstream_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  auto a = std::make_shared<UpstreamArgs>();
  CLI::App* app = parent.add_subcommand("upstream", "Add or remove a local listener for a mesh service");
  app->require_subcommand(1);
  CLI::App* add = app->add_subcommand("add", "Listen locally; each connection goes to a healthy instance of NAME");
  add_client_options(add, *o, false);
  add->add_option("name", a->name, "The destination service")->required();
  add->add_option("--listen", a->listen, "IP:PORT local apps connect to, like 127.0.0.1:9001")->required();
  add->add_option("--balance", a->balance, "peak-ewma (default) or round-robin")
      ->check(CLI::IsMember({"peak-ewma", "round-robin"}));
  add->add_option("--as", a->as,
                  "The local app's own service: the source service policy decides on (with a trust root, "
                  "this node's certificate must grant it)");
  CLI::App* rm = app->add_subcommand("remove", "Close the listener (live connections finish)");
  add_client_options(rm, *o, false);
  rm->add_option("name", a->remove_name, "The upstream's service name")->required();
  return Command{app, [o, a, add] {
                   if (add->parsed()) {
                     json params{{"name", a->name}, {"listen", a->listen}, {"balance", a->balance}};
                     if (!a->as.empty()) params["as"] = a->as;
                     auto r = call(*o, "upstream.add", params);
                     if (!r) return kExitFailure;
                     std::printf("upstream %s listening on %s%s\n", a->name.c_str(),
                                 r->value("listen", a->listen).c_str(),
                                 a->as.empty() ? "" : (" as " + a->as).c_str());
                     return kExitOk;
                   }
                   auto r = call(*o, "upstream.remove", json{{"name", a->remove_name}});
                   if (!r) return kExitFailure;
                   std::printf("removed upstream %s\n", a->remove_name.c_str());
                   return kExitOk;
                 }};
}

Command upstreams_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("upstreams", "The upstreams of this agent");
  add_client_options(app, *o, true);
  return Command{app, [o] {
                   auto r = call(*o, "upstreams", json::object());
                   if (!r) return kExitFailure;
                   const json& list = (*r)["upstreams"];
                   if (o->json) {
                     print_json(list);
                     return kExitOk;
                   }
                   std::vector<std::vector<std::string>> rows = {{"UPSTREAM", "LISTEN", "BALANCE", "AS"}};
                   for (const json& u : list) {
                     const bool has_as = u.contains("as") && u["as"].is_string();
                     rows.push_back({u.value("name", ""), u.value("listen", ""), u.value("balance", ""),
                                     has_as ? u["as"].get<std::string>() : "-"});
                   }
                   print_table(rows);
                   return kExitOk;
                 }};
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

Command routes_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("routes", "For each upstream: its instances, health, RTT and weight");
  add_client_options(app, *o, true);
  return Command{app, [o] {
                   auto r = call(*o, "routes", json::object());
                   if (!r) return kExitFailure;
                   const json& list = (*r)["routes"];
                   if (o->json) {
                     print_json(list);
                     return kExitOk;
                   }
                   std::vector<std::vector<std::string>> rows = {
                       {"UPSTREAM", "NODE", "ADDRESS", "HEALTH", "RTT_MS", "WEIGHT", "ACTIVE"}};
                   for (const json& u : list) {
                     if (u["instances"].empty()) rows.push_back({u.value("upstream", ""), "-", "-", "no instance", "", "", ""});
                     for (const json& i : u["instances"]) {
                       std::string health = i.value("health", "");
                       if (i.value("ejected", false)) health += " (ejected)";
                       rows.push_back({u.value("upstream", ""), i.value("node", ""), i.value("addr", ""), health,
                                       fixed(i.value("rtt_ms", 0.0), 2), fixed(i.value("weight", 0.0), 3),
                                       std::to_string(i.value("active", std::uint64_t{0}))});
                     }
                   }
                   print_table(rows);
                   return kExitOk;
                 }};
}

Command stats_command(CLI::App& parent) {
  auto o = std::make_shared<ClientOptions>();
  CLI::App* app = parent.add_subcommand("stats", "Data plane counters per upstream and per served service");
  add_client_options(app, *o, true);
  return Command{app, [o] {
                   auto r = call(*o, "stats", json::object());
                   if (!r) return kExitFailure;
                   if (o->json) {
                     print_json(*r);
                     return kExitOk;
                   }
                   std::vector<std::vector<std::string>> rows = {
                       {"KIND", "NAME", "CONNECTIONS", "ACTIVE", "BYTES_IN", "BYTES_OUT", "FAILURES", "RETRIES", "EJECTIONS"}};
                   for (const char* kind : {"upstreams", "services"}) {
                     for (const auto& item : (*r)[kind].items()) {
                       const std::string name = item.key();
                       const json& c = item.value();
                       auto num = [&c](const char* k) { return std::to_string(c.value(k, std::uint64_t{0})); };
                       rows.push_back({kind == std::string("upstreams") ? "upstream" : "service", name, num("connections"),
                                       num("active"), num("bytes_in"), num("bytes_out"), num("failures"), num("retries"),
                                       num("ejections")});
                     }
                   }
                   print_table(rows);
                   for (const char* k : {"sessions_open", "sessions_initiated", "sessions_accepted", "handshakes_failed",
                                         "records_rejected", "protocol_errors", "sessions_failed", "streams_refused",
                                         "connections_open", "bytes_buffered", "buffer_bytes_allocated"}) {
                     std::printf("%s = %llu\n", k, static_cast<unsigned long long>(r->value(k, std::uint64_t{0})));
                   }
                   if (r->contains("policy_decisions") && (*r)["policy_decisions"].is_object()) {
                     for (const auto& item : (*r)["policy_decisions"].items()) {
                       std::printf("policy_decisions.%s = %s\n", item.key().c_str(), item.value().dump().c_str());
                     }
                   }
                   if (r->contains("policy") && (*r)["policy"].is_object()) {
                     const json& p = (*r)["policy"];
                     std::printf("policy.version = %llu\npolicy.accepted = %llu\n",
                                 static_cast<unsigned long long>(p.value("version", std::uint64_t{0})),
                                 static_cast<unsigned long long>(p.value("accepted", std::uint64_t{0})));
                     if (p.contains("rejected") && p["rejected"].is_object()) {
                       for (const auto& item : p["rejected"].items()) {
                         std::printf("policy.rejected.%s = %s\n", item.key().c_str(), item.value().dump().c_str());
                       }
                     }
                   }
                   return kExitOk;
                 }};
}

}  // namespace

std::vector<Command> add_service_commands(CLI::App& parent) {
  return {service_command(parent), services_command(parent), upstream_command(parent),
          upstreams_command(parent), routes_command(parent),  stats_command(parent)};
}

}  // namespace weft::cli
