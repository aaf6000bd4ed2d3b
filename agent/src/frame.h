#pragma once
// The frame of a reliable agent <-> agent message, inside the seal (Purpose::kStream):
//
//   +---------+--------+------------+------------------------+----------------------+
//   | ver = 1 | kind   | from_len   | from ("ip:port", ASCII)| body                 |
//   +---------+--------+------------+------------------------+----------------------+
//
// `from` is the sender's advertised gossip address: replies go there (the TCP source address is
// an ephemeral port). It is trusted only as far as the seal is: any key holder can write it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "weft/base/endpoint.h"
#include "weft/base/result.h"

namespace weft::agent {

inline constexpr std::uint8_t kFrameVersion = 1;

// append-only: values are on the wire
enum class FrameKind : std::uint8_t {
  kGossipStream = 0,  // body: a gossip push-pull stream (weft::gossip codec)
  kKeyRequest = 1,    // body: msgpack map (keyops.cpp)
  kKeyResponse = 2,
  kCatalogRequest = 3,   // body: catalog.h
  kCatalogResponse = 4,
  kSignedDocRequest = 5,   // body: doc_sync.h (the operator-signed policy, issue 5)
  kSignedDocResponse = 6,
};

struct FrameView {
  FrameKind kind;
  Endpoint from;
  std::span<const std::byte> body;
};

void encode_frame(FrameKind kind, const Endpoint& from, std::span<const std::byte> body, std::vector<std::byte>& out);
[[nodiscard]] Result<FrameView> decode_frame(std::span<const std::byte> bytes);

}  // namespace weft::agent
