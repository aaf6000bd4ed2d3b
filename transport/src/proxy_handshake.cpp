// The session handshake (proxy.h): message 1 with the initiator's hello, message 2 with the
// responder's choice, each framed as [u16 big-endian length][Noise message]; then the record
// keys from split() and the multiplexer. Every refusal is counted in handshakes_failed and
// kills the session (its waiting conns are retried elsewhere). With a trust root (ProxyTrust)
// both messages carry the sender's certificate, and each end checks the other's
// (check_peer_cert, proxy_trust.cpp) instead of the gossiped key.

#include <algorithm>
#include <array>
#include <spdlog/spdlog.h>

#include "proxy_impl.h"

namespace weft::transport {
namespace {

std::vector<Cipher> offered_ciphers() {
  if (aes_ni_available()) return {Cipher::kAes256Gcm, Cipher::kXChaCha20Poly1305};
  return {Cipher::kXChaCha20Poly1305};
}

void append_framed(ByteBuffer& out, std::span<const std::byte> msg) {
  const std::array<std::byte, 2> len{static_cast<std::byte>((msg.size() >> 8) & 0xff),
                                     static_cast<std::byte>(msg.size() & 0xff)};
  out.append(len);
  out.append(msg);
}

}  // namespace

void Proxy::Impl::session_connected(Session& s) {
  if (const int e = socket_error(s.fd); e != 0) {
    kill_session(s, "connect_failed");
    return;
  }
  Hello hello{cfg_.node, offered_ciphers(), {}};
  if (trust_) hello.cert = trust_->own_cert;
  auto msg = s.hs->write_message(encode_hello(hello));
  if (!msg) {
    ++stats_.handshakes_failed;
    kill_session(s, "handshake_write");
    return;
  }
  append_framed(s.wbuf, *msg);
  s.state = Session::State::kHandshake;
  flush_session(s);
}

// Returns false when the session was killed.
bool Proxy::Impl::session_handshake_input(Session& s) {
  if (s.hs_in.size() < 2) return true;
  const std::size_t len = (std::to_integer<std::size_t>(s.hs_in[0]) << 8) | std::to_integer<std::size_t>(s.hs_in[1]);
  if (s.hs_in.size() < 2 + len) return true;
  const std::span<const std::byte> msg(s.hs_in.data() + 2, len);
  auto refuse = [&](std::string_view why, std::string_view detail = {}) {
    ++stats_.handshakes_failed;
    kill_session(s, why, detail);
    return false;
  };
  auto payload = s.hs->read_message(msg);
  if (!payload) return refuse("handshake_bad_message");
  Cipher cipher = Cipher::kXChaCha20Poly1305;
  if (!s.initiator) {
    auto hello = decode_hello(*payload);
    if (!hello) return refuse("handshake_bad_hello");
    s.node = hello->node;  // as claimed, for the log; checked below
    // The caller proved it holds the static key it sent; it must be the key its certificate
    // names (with a trust root) or the key gossip gave us for the name it claims, or anyone in
    // the mesh could pose as any node.
    const auto rs = s.hs->remote_static();
    if (!rs) return refuse("handshake_key_mismatch");
    s.peer_static = *rs;
    if (trust_) {
      std::string detail;
      if (auto why = check_peer_cert(s, hello->cert, hello->node, detail); !why.empty()) return refuse(why, detail);
    } else {
      const KxPublicKey* want = nullptr;
      if (routes_) {
        if (auto k = routes_->peer_keys.find(hello->node); k != routes_->peer_keys.end()) want = &k->second;
      }
      if (want == nullptr || *rs != *want) return refuse("handshake_key_mismatch");
    }
    const auto offers = [&](Cipher c) { return std::find(hello->ciphers.begin(), hello->ciphers.end(), c) != hello->ciphers.end(); };
    if (offers(Cipher::kAes256Gcm) && aes_ni_available()) {
      cipher = Cipher::kAes256Gcm;
    } else if (offers(Cipher::kXChaCha20Poly1305)) {
      cipher = Cipher::kXChaCha20Poly1305;
    } else {
      return refuse("handshake_no_cipher");
    }
    Accept accept{cfg_.node, cipher, {}};
    if (trust_) accept.cert = trust_->own_cert;
    auto reply = s.hs->write_message(encode_accept(accept));
    if (!reply) return refuse("handshake_write");
    append_framed(s.wbuf, *reply);
  } else {
    auto accept = decode_accept(*payload);
    if (!accept) return refuse("handshake_bad_accept");
    const auto offered = offered_ciphers();
    if (accept->node != s.node) return refuse("handshake_wrong_node");
    if (std::find(offered.begin(), offered.end(), accept->cipher) == offered.end()) return refuse("handshake_cipher_not_offered");
    cipher = accept->cipher;
    // IK: the responder proved the key we dialled with; with a trust root its certificate
    // must name that key and the node we dialled.
    const auto rs = s.hs->remote_static();
    if (!rs) return refuse("handshake_key_mismatch");
    s.peer_static = *rs;
    if (trust_) {
      std::string detail;
      if (auto why = check_peer_cert(s, accept->cert, s.node, detail); !why.empty()) return refuse(why, detail);
    }
  }
  auto keys = s.hs->split();
  if (!keys) return refuse("handshake_split");
  const HandshakeRole role = s.initiator ? HandshakeRole::kInitiator : HandshakeRole::kResponder;
  s.sealer.emplace(cipher, keys->send_key(role));
  s.opener.emplace(cipher, keys->receive_key(role));
  s.hs_in.erase(s.hs_in.begin(), s.hs_in.begin() + static_cast<std::ptrdiff_t>(2 + len));
  session_up(s);
  return true;
}

void Proxy::Impl::session_up(Session& s) {
  if (!s.initiator) --handshaking_;
  s.state = Session::State::kUp;
  s.hs.reset();
  s.idle_since = now_;
  MuxConfig mc;
  mc.max_streams = cfg_.max_streams_per_session;
  mc.receive_window = cfg_.stream_window;
  s.mux.emplace(s.initiator ? MuxRole::kInitiator : MuxRole::kResponder, mc);
  arm_session_timer(s, now_ + (s.initiator ? cfg_.session_idle : 2 * cfg_.session_idle));
  log_->debug("session_up node={} initiator={} cipher={}", s.node, s.initiator, to_string(s.sealer->cipher()));
  std::vector<std::uint64_t> waiting;
  waiting.swap(s.waiting);
  for (std::uint64_t cid : waiting) {
    if (Conn* c = conn(cid)) conn_start_stream(*c, s);
  }
  mark_dirty(s.id);
}

}  // namespace weft::transport
