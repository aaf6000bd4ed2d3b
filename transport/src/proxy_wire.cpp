// The proxy's wire payloads (handshake and OPEN maps, proxy.h) and its socket helpers.
// Every payload comes from a peer: msgpack is unpacked with explicit limits inside a try block,
// and any surprise (wrong type, missing key, trailing bytes) is "no value", never an exception.

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <msgpack.hpp>

#include "proxy_impl.h"
#include "sockaddr.h"

namespace weft::transport {
namespace {

using detail::domain_of;
using detail::errno_text;
using detail::from_sockaddr;
using detail::to_sockaddr;

constexpr std::size_t kMaxPayload = 1024;  // every map here is far smaller, but for a certificate
constexpr std::size_t kMaxName = 255;
// Hello and Accept may carry a certificate envelope (at most kMaxCertBytes) besides the rest.
constexpr std::size_t kMaxHandshakePayload = kMaxPayload + kMaxCertBytes;

std::vector<std::byte> to_bytes(const msgpack::sbuffer& b) {
  const auto* p = reinterpret_cast<const std::byte*>(b.data());
  return {p, p + b.size()};
}

bool reference_input(msgpack::type::object_type /*type*/, std::size_t /*size*/, void* /*user*/) {
  return true;
}

// Calls `field(key, value)` for each entry of the one map that fills `bytes`; false on anything
// else. The object tree references `bytes`, which outlives it. `max_bin`: the largest bin value
// allowed (0: none).
template <typename F>
bool for_each_field(std::span<const std::byte> bytes, F&& field, std::size_t max_bytes = kMaxPayload,
                    std::size_t max_bin = 0) {
  if (bytes.empty() || bytes.size() > max_bytes) return false;
  try {
    msgpack::zone zone;
    const msgpack::unpack_limit limits(/*array=*/8, /*map=*/8, /*str=*/kMaxName, /*bin=*/max_bin,
                                       /*ext=*/0, /*depth=*/3);
    std::size_t off = 0;
    const msgpack::object obj = msgpack::unpack(zone, reinterpret_cast<const char*>(bytes.data()),
                                                bytes.size(), off, reference_input, nullptr, limits);
    if (off != bytes.size() || obj.type != msgpack::type::MAP) return false;
    for (std::uint32_t i = 0; i < obj.via.map.size; ++i) {
      const auto& kv = obj.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) return false;
      if (!field(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size), kv.val)) return false;
    }
    return true;
  } catch (...) {
    return false;
  }
}

bool read_str(const msgpack::object& o, std::string& out) {
  if (o.type != msgpack::type::STR || o.via.str.size == 0 || o.via.str.size > kMaxName) return false;
  out.assign(o.via.str.ptr, o.via.str.size);
  return true;
}

bool read_uint(const msgpack::object& o, std::uint64_t& out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) return false;
  out = o.via.u64;
  return true;
}

bool read_cert(const msgpack::object& o, std::vector<std::byte>& out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size == 0 || o.via.bin.size > kMaxCertBytes) return false;
  const auto* p = reinterpret_cast<const std::byte*>(o.via.bin.ptr);
  out.assign(p, p + o.via.bin.size);
  return true;
}

void pack_cert(msgpack::packer<msgpack::sbuffer>& pk, const std::vector<std::byte>& cert) {
  pk.pack(std::string_view("cert"));
  pk.pack_bin(static_cast<std::uint32_t>(cert.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(cert.data()), static_cast<std::uint32_t>(cert.size()));
}

bool known_cipher(std::uint64_t v) {
  return v == static_cast<std::uint64_t>(Cipher::kAes256Gcm) ||
         v == static_cast<std::uint64_t>(Cipher::kXChaCha20Poly1305);
}


}  // namespace

std::vector<std::byte> encode_hello(const Hello& h) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(h.cert.empty() ? 3 : 4);
  pk.pack(std::string_view("v"));
  pk.pack(1);
  pk.pack(std::string_view("node"));
  pk.pack(h.node);
  if (!h.cert.empty()) pack_cert(pk, h.cert);
  pk.pack(std::string_view("ciphers"));
  pk.pack_array(static_cast<std::uint32_t>(h.ciphers.size()));
  for (Cipher c : h.ciphers) pk.pack(static_cast<unsigned>(c));
  return to_bytes(b);
}

std::optional<Hello> decode_hello(std::span<const std::byte> bytes) {
  Hello h;
  std::uint64_t v = 0;
  const bool ok = for_each_field(bytes, [&](std::string_view k, const msgpack::object& o) {
    if (k == "v") return read_uint(o, v);
    if (k == "node") return read_str(o, h.node);
    if (k == "ciphers") {
      if (o.type != msgpack::type::ARRAY) return false;
      for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
        std::uint64_t c = 0;
        if (!read_uint(o.via.array.ptr[i], c)) return false;
        if (known_cipher(c)) h.ciphers.push_back(static_cast<Cipher>(c));  // unknown: a newer peer
      }
      return true;
    }
    if (k == "cert") return read_cert(o, h.cert);
    return true;  // unknown keys: a newer peer's additions
  }, kMaxHandshakePayload, kMaxCertBytes);
  if (!ok || v != 1 || h.node.empty()) return std::nullopt;
  return h;
}

std::vector<std::byte> encode_accept(const Accept& a) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(a.cert.empty() ? 3 : 4);
  pk.pack(std::string_view("v"));
  pk.pack(1);
  pk.pack(std::string_view("node"));
  pk.pack(a.node);
  if (!a.cert.empty()) pack_cert(pk, a.cert);
  pk.pack(std::string_view("cipher"));
  pk.pack(static_cast<unsigned>(a.cipher));
  return to_bytes(b);
}

std::optional<Accept> decode_accept(std::span<const std::byte> bytes) {
  Accept a;
  std::uint64_t v = 0;
  std::uint64_t cipher = 0;
  const bool ok = for_each_field(bytes, [&](std::string_view k, const msgpack::object& o) {
    if (k == "v") return read_uint(o, v);
    if (k == "node") return read_str(o, a.node);
    if (k == "cipher") return read_uint(o, cipher);
    if (k == "cert") return read_cert(o, a.cert);
    return true;
  }, kMaxHandshakePayload, kMaxCertBytes);
  if (!ok || v != 1 || a.node.empty() || !known_cipher(cipher)) return std::nullopt;
  a.cipher = static_cast<Cipher>(cipher);
  return a;
}

std::vector<std::byte> encode_open(const std::string& service, const std::string& from) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(from.empty() ? 2 : 3);
  pk.pack(std::string_view("v"));
  pk.pack(1);
  pk.pack(std::string_view("service"));
  pk.pack(service);
  if (!from.empty()) {
    pk.pack(std::string_view("from"));
    pk.pack(from);
  }
  return to_bytes(b);
}

std::optional<OpenRequest> decode_open_request(std::span<const std::byte> bytes) {
  OpenRequest r;
  std::uint64_t v = 0;
  const bool ok = for_each_field(bytes, [&](std::string_view k, const msgpack::object& o) {
    if (k == "v") return read_uint(o, v);
    if (k == "service") return read_str(o, r.service);
    if (k == "from") return read_str(o, r.from);  // present: 1..255 bytes
    return true;
  });
  if (!ok || v != 1 || r.service.empty()) return std::nullopt;
  return r;
}

std::optional<std::string> decode_open(std::span<const std::byte> bytes) {
  auto r = decode_open_request(bytes);
  if (!r) return std::nullopt;
  return std::move(r->service);
}

int listen_tcp(const Endpoint& at, Endpoint& bound, std::string& err) {
  const int fd = ::socket(domain_of(at), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = "socket: " + errno_text(errno);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  const socklen_t len = to_sockaddr(at, domain_of(at), ss);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 || ::listen(fd, 1024) != 0) {
    err = "bind/listen " + at.to_string() + ": " + errno_text(errno);
    ::close(fd);
    return -1;
  }
  sockaddr_storage got{};
  socklen_t got_len = sizeof got;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &got_len);
  bound = at;
  if (auto name = from_sockaddr(got, got_len)) bound.port = name->port;
  return fd;
}

int connect_tcp(const Endpoint& to, std::string& err) {
  const int fd = ::socket(domain_of(to), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = "socket: " + errno_text(errno);
    return -1;
  }
  set_nodelay(fd);
  sockaddr_storage ss{};
  const socklen_t len = to_sockaddr(to, domain_of(to), ss);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    err = "connect " + to.to_string() + ": " + errno_text(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_peer_timeout(int fd, Duration timeout) {
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
  const int one = 1;
  const int idle = static_cast<int>(std::max<long long>(1, secs / 2));
  const int interval = static_cast<int>(std::max<long long>(1, secs / 4));
  const int probes = 2;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
  const unsigned user_timeout = static_cast<unsigned>(std::clamp<long long>(ms, 1, 3'600'000));
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

int socket_error(int fd) {
  int e = 0;
  socklen_t len = sizeof e;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0) return errno;
  return e;
}

void close_with_reset(int fd) {
  if (fd < 0) return;
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

}  // namespace weft::transport
