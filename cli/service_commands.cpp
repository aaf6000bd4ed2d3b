// Service catalog subcommands: `weft service register|deregister`, `weft services`.

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

}  // namespace

std::vector<Command> add_service_commands(CLI::App& parent) {
  return {service_command(parent), services_command(parent)};
}

}  // namespace weft::cli
