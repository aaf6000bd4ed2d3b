#pragma once
// Signed gossip claims (optional): who may say what about whom.
//
// Without signatures anyone holding the cluster key can speak for any member: announce it alive
// at a huge incarnation, accuse it, make it leave, take its name over (memberlist #358, #370).
// With a ClaimAuthority in Config::claims every claim that changes what a node believes carries
// a signature, and a node applies it only after the authority verified it:
//
//   claim                         signed by          carried in
//   alive(name, addr, inc, meta)  the member itself  alive messages, push-pull entries (+ its
//                                                    credential, e.g. a node certificate)
//   suspect(name, inc, accuser)   the accuser        suspect messages, suspect entries
//   dead(name, inc, accuser)      the accuser        dead messages, failed entries; a leave is
//                                                    dead with accuser == name (the member)
//
// A claim is verified only when it is news (a higher incarnation, a new accuser, a new verdict),
// so each (member, incarnation) is verified once per node, not once per gossip copy. An
// accusation is checked against the credential the accuser's own verified alive brought, so an
// accuser this node does not know as a member cannot accuse. Relaying nodes forward the
// original signature; they never sign for others. Suspicion confirmations count distinct
// accusers, each verified.
//
// Replays need no extra state: a captured claim is only ever accepted while it is news, which
// the incarnation rules decide (a replayed alive, accusation or leave below the member's current
// incarnation is stale). The gossip core never touches keys, files or clocks: the authority
// (the agent's, over node certificates; a test's, over plain keys) does the cryptography.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weft/base/endpoint.h"

namespace weft::gossip {

// append-only: values are inside signed bytes
enum class ClaimKind : std::uint8_t {
  kAlive = 1,
  kSuspect = 2,
  kDead = 3,
};

// Largest signature and credential a decoder accepts (an Ed25519 signature is 64 bytes, a node
// certificate a few hundred).
inline constexpr std::size_t kMaxSignatureBytes = 128;
inline constexpr std::size_t kMaxCredentialBytes = 2048;

// The exact bytes signed for a claim: msgpack
//   ["weft gossip claim", 1, kind, name, incarnation, addr:bin, meta:bin]   alive
//   ["weft gossip claim", 1, kind, name, incarnation, accuser]              suspect, dead
// The authority may bind more (e.g. the cluster name) into what it signs.
std::vector<std::byte> alive_claim(const std::string& name, const Endpoint& addr, std::uint64_t incarnation,
                                   const std::vector<std::byte>& meta);
std::vector<std::byte> accusation_claim(ClaimKind kind, const std::string& name, std::uint64_t incarnation,
                                        const std::string& accuser);

class ClaimAuthority {
 public:
  virtual ~ClaimAuthority() = default;
  // Our own credential, sent with our alive claims so others can check our signatures.
  [[nodiscard]] virtual const std::vector<std::byte>& credential() const = 0;
  // Our signature over `claim`.
  [[nodiscard]] virtual std::vector<std::byte> sign(std::span<const std::byte> claim) = 0;
  // True when `credential` is valid (now) for the member named `signer` and `sig` is that
  // member's signature over `claim`. Untrusted input: any bytes, never throws.
  [[nodiscard]] virtual bool verify(std::string_view signer, std::span<const std::byte> credential,
                                    std::span<const std::byte> claim, std::span<const std::byte> sig) = 0;
  // True when `credential` is still valid (now) for `signer`: the signature check is not repeated
  // (see Node::recheck_credentials), so this should be cheap.
  [[nodiscard]] virtual bool credential_valid(std::string_view signer, std::span<const std::byte> credential) = 0;
};

}  // namespace weft::gossip
