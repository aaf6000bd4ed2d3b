// Signed claims (claims.h): signing our own, verifying others' once they are news, keeping the
// proofs we forward. Without Config::claims every function here is a no-op that accepts.

#include <spdlog/spdlog.h>

#include "node_impl.h"

namespace weft::gossip {

Proofs& NodeImpl::proofs_of(std::uint32_t slot) {
  Member& m = members_.at(slot);
  if (!m.proofs) m.proofs = std::make_unique<Proofs>();
  return *m.proofs;
}

std::vector<std::byte> NodeImpl::sign_claim(std::span<const std::byte> claim) {
  ++stats_.claims_signed;
  return claims_->sign(claim);
}

void NodeImpl::sign_self() {
  if (!claims_) return;
  const Member& self = members_.at(self_slot_);
  Proofs& p = proofs_of(self_slot_);
  p.alive_sig = sign_claim(alive_claim(self.name, self.addr, self.incarnation, self.meta));
  p.cred = claims_->credential();
}

Alive NodeImpl::alive_of(std::uint32_t slot) const {
  const Member& m = members_.at(slot);
  Alive a{m.name, m.addr, m.incarnation, m.meta};
  if (m.proofs) {
    a.sig = m.proofs->alive_sig;
    a.cred = m.proofs->cred;
  }
  return a;
}

Suspect NodeImpl::suspect_of(std::uint32_t slot) const {
  const Member& m = members_.at(slot);
  if (claims_ && m.proofs && !m.proofs->accuser.empty()) {
    return Suspect{m.name, m.incarnation, m.proofs->accuser, m.proofs->accuse_sig, m.proofs->accuse_dead};
  }
  return Suspect{m.name, m.incarnation, accuser_of(slot)};
}

Dead NodeImpl::dead_of(std::uint32_t slot) const {
  const Member& m = members_.at(slot);
  if (claims_ && m.proofs && !m.proofs->accuser.empty()) {
    return Dead{m.name, m.incarnation, m.proofs->accuser, m.proofs->accuse_sig};
  }
  // Unsigned: a failure is re-asserted in our name, a leave in the member's.
  return Dead{m.name, m.incarnation, m.state == MemberState::kLeft ? m.name : members_.at(self_slot_).name};
}

Suspect NodeImpl::own_suspect(const std::string& name, std::uint64_t incarnation) {
  Suspect s{name, incarnation, members_.at(self_slot_).name};
  if (claims_) s.sig = sign_claim(accusation_claim(ClaimKind::kSuspect, s.name, s.incarnation, s.from));
  return s;
}

Dead NodeImpl::own_dead(const std::string& name, std::uint64_t incarnation) {
  Dead d{name, incarnation, members_.at(self_slot_).name};
  if (claims_) d.sig = sign_claim(accusation_claim(ClaimKind::kDead, d.name, d.incarnation, d.from));
  return d;
}

bool NodeImpl::verified_alive(const Alive& a) {
  if (!claims_) return true;
  if (!a.sig.empty() && !a.cred.empty() &&
      claims_->verify(a.name, a.cred, alive_claim(a.name, a.addr, a.incarnation, a.meta), a.sig)) {
    ++stats_.claims_verified;
    return true;
  }
  ++stats_.claims_rejected;
  if (log_) log_->debug("claim_rejected kind=alive name={} incarnation={}", a.name, a.incarnation);
  return false;
}

// The accuser's credential is the one its own verified alive brought: someone we do not know as
// a member (or know only without a credential) cannot accuse.
bool NodeImpl::verified_accusation(ClaimKind kind, const std::string& name, std::uint64_t incarnation,
                                   const std::string& from, const std::vector<std::byte>& sig) {
  if (!claims_) return true;
  const std::uint32_t slot = members_.find(from);
  if (slot == MemberTable::kNone || !members_.at(slot).proofs || members_.at(slot).proofs->cred.empty()) {
    ++stats_.claims_unknown_signer;
    if (log_) log_->debug("claim_rejected kind={} name={} from={} reason=unknown_signer", static_cast<int>(kind), name, from);
    return false;
  }
  if (!sig.empty() &&
      claims_->verify(from, members_.at(slot).proofs->cred, accusation_claim(kind, name, incarnation, from), sig)) {
    ++stats_.claims_verified;
    return true;
  }
  ++stats_.claims_rejected;
  if (log_) log_->debug("claim_rejected kind={} name={} from={}", static_cast<int>(kind), name, from);
  return false;
}

void NodeImpl::keep_alive_proof(std::uint32_t slot, const Alive& a) {
  if (!claims_) return;
  Proofs& p = proofs_of(slot);
  p.alive_sig = a.sig;
  if (p.cred != a.cred) p.cred = a.cred;
  p.accuser.clear();
  p.accuse_sig.clear();
  p.accuse_dead = false;
}

void NodeImpl::keep_accusation_proof(std::uint32_t slot, const std::string& from, const std::vector<std::byte>& sig,
                                     bool dead) {
  if (!claims_) return;
  Proofs& p = proofs_of(slot);
  p.accuser = from;
  p.accuse_sig = sig;
  p.accuse_dead = dead;
}

std::size_t NodeImpl::recheck_credentials(TimePoint now) {
  if (!claims_) return 0;
  std::size_t expelled = 0;
  for (std::uint32_t s = 0; s < members_.slot_end(); ++s) {
    if (!members_.in_use(s) || s == self_slot_) continue;
    const Member& m = members_.at(s);
    if (m.state != MemberState::kAlive && m.state != MemberState::kSuspect) continue;
    if (m.proofs && claims_->credential_valid(m.name, m.proofs->cred)) continue;
    ++expelled;
    ++stats_.credentials_expelled;
    if (log_) log_->warn("member_expelled name={} incarnation={} reason=credential", m.name, m.incarnation);
    on_dead(now, own_dead(m.name, m.incarnation));
  }
  return expelled;
}

PushPullEntry NodeImpl::entry_of(std::uint32_t slot) const {
  const Member& m = members_.at(slot);
  PushPullEntry e{m.name, m.addr, m.incarnation, m.state, m.meta};
  if (claims_ && m.proofs) {
    e.sig = m.proofs->alive_sig;
    e.cred = m.proofs->cred;
    if (m.state != MemberState::kAlive) {
      e.accuser = m.proofs->accuser;
      e.accuse_sig = m.proofs->accuse_sig;
      e.accuse_dead = m.proofs->accuse_dead;
    }
  }
  return e;
}

}  // namespace weft::gossip
