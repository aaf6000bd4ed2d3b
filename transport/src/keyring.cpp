#include "weft/transport/keyring.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "sodium_init.h"

namespace weft::transport {

namespace {

using detail::ensure_sodium;

static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == kKeyBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kSealTagBytes);

constexpr std::size_t kNonceOffset = 5;
constexpr std::size_t kNonceBytes = crypto_aead_chacha20poly1305_ietf_NPUBBYTES;
constexpr char kKeyIdLabel[] = "weft cluster key id";  // hashed without its NUL
// format_key: 44 characters plus the NUL sodium_bin2base64 writes.
constexpr std::size_t kKeyBase64Chars = 44;

// Additional data: the 5 header bytes (version, key id) and the purpose.
std::array<unsigned char, 6> additional_data(const unsigned char* header, Purpose purpose) {
  return {header[0], header[1], header[2], header[3], header[4], static_cast<unsigned char>(purpose)};
}

KeyId read_key_id(const unsigned char* p) {
  return (KeyId{p[0]} << 24) | (KeyId{p[1]} << 16) | (KeyId{p[2]} << 8) | KeyId{p[3]};
}

const unsigned char* as_uchar(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }
unsigned char* as_uchar(std::byte* p) { return reinterpret_cast<unsigned char*>(p); }

}  // namespace

KeyId key_id(const Key& key) {
  ensure_sodium();
  std::array<unsigned char, crypto_generichash_BYTES> digest{};
  static_assert(crypto_generichash_BYTES == 32);  // BLAKE2b-256
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, digest.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(kKeyIdLabel),
                            sizeof kKeyIdLabel - 1);
  crypto_generichash_update(&state, key.data(), key.size());
  crypto_generichash_final(&state, digest.data(), digest.size());
  sodium_memzero(&state, sizeof state);
  return read_key_id(digest.data());
}

std::string format_key_id(KeyId id) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", id);
  return buf;
}

std::string format_key(const Key& key) {
  ensure_sodium();
  static_assert(sodium_base64_ENCODED_LEN(kKeyBytes, sodium_base64_VARIANT_ORIGINAL) == kKeyBase64Chars + 1);
  char buf[kKeyBase64Chars + 1];
  sodium_bin2base64(buf, sizeof buf, key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(buf, kKeyBase64Chars);
  sodium_memzero(buf, sizeof buf);
  return out;
}

Result<Key> parse_key(std::string_view base64) {
  ensure_sodium();
  if (base64.empty()) return fail("empty key: expected 44 base64 characters (32 bytes)");
  if (base64.size() != kKeyBase64Chars) {
    return fail("bad key length: expected 44 base64 characters (32 bytes), got " +
                std::to_string(base64.size()));
  }
  // Decoded into a roomier buffer so that 44 characters holding 33 bytes read as a length error.
  std::array<unsigned char, kKeyBytes + 4> buf{};
  std::size_t len = 0;
  const char* end = nullptr;
  const int rc = sodium_base642bin(buf.data(), buf.size(), base64.data(), base64.size(), nullptr, &len, &end,
                                   sodium_base64_VARIANT_ORIGINAL);
  Key key{};
  const bool decoded = rc == 0 && end == base64.data() + base64.size();
  if (decoded && len == kKeyBytes) std::memcpy(key.data(), buf.data(), kKeyBytes);
  sodium_memzero(buf.data(), buf.size());
  if (!decoded) return fail("bad key: not standard base64");
  if (len != kKeyBytes) return fail("bad key length: expected 32 bytes, got " + std::to_string(len));
  return key;
}

Key generate_key() {
  ensure_sodium();
  Key key{};
  randombytes_buf(key.data(), key.size());
  return key;
}

const char* to_string(OpenError e) {
  switch (e) {
    case OpenError::kTooShort: return "too_short";
    case OpenError::kBadVersion: return "bad_version";
    case OpenError::kUnknownKey: return "unknown_key";
    case OpenError::kAuthFailed: return "auth_failed";
    case OpenError::kPlaintext: return "plaintext";
    case OpenError::kSealedNoKey: return "sealed_no_key";
  }
  return "unknown";
}

// ---- Keyring ----
//
// Key material is wiped wherever a copy would otherwise be left in freed memory: on destruction,
// before an assignment overwrites the ring, when a key is removed, and when install() grows the
// vector (growth is done by hand so that the old buffer can be wiped before it is freed).

void Keyring::wipe() {
  if (!keys_.empty()) sodium_memzero(keys_.data(), keys_.size() * sizeof(Entry));
}

Keyring::~Keyring() { wipe(); }

Keyring::Keyring(const Keyring& o) : keys_(o.keys_), primary_(o.primary_) {}

Keyring& Keyring::operator=(const Keyring& o) {
  if (this != &o) {
    wipe();
    keys_.clear();
    // Replace the buffer rather than reuse it: assign() could reallocate and free it unwiped.
    std::vector<Entry> fresh;
    fresh.reserve(o.keys_.size());
    fresh.assign(o.keys_.begin(), o.keys_.end());
    keys_.swap(fresh);
    primary_ = o.primary_;
  }
  return *this;
}

Keyring::Keyring(Keyring&& o) noexcept : keys_(std::move(o.keys_)), primary_(o.primary_) {
  o.keys_.clear();
  o.primary_ = 0;
}

Keyring& Keyring::operator=(Keyring&& o) noexcept {
  if (this != &o) {
    wipe();
    keys_ = std::move(o.keys_);  // our (wiped) buffer is freed, theirs is taken over
    primary_ = o.primary_;
    o.keys_.clear();
    o.primary_ = 0;
  }
  return *this;
}

void Keyring::install(const Key& key) {
  const KeyId id = key_id(key);
  if (find(id) != nullptr) return;
  if (keys_.size() == keys_.capacity()) {
    std::vector<Entry> grown;
    grown.reserve(std::max<std::size_t>(4, keys_.size() * 2));
    grown.assign(keys_.begin(), keys_.end());
    wipe();
    keys_.swap(grown);
  }
  keys_.push_back(Entry{id, key});
  if (keys_.size() == 1) primary_ = 0;
}

Result<void> Keyring::use(KeyId id) {
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i].id == id) {
      primary_ = i;
      return {};
    }
  }
  return fail("key " + format_key_id(id) + " is not installed");
}

Result<void> Keyring::remove(KeyId id) {
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i].id != id) continue;
    if (i == primary_) {
      return fail("key " + format_key_id(id) + " is the primary key: make another key primary first");
    }
    // Shift the tail down in place and wipe the slot that falls off the end.
    for (std::size_t j = i; j + 1 < keys_.size(); ++j) keys_[j] = keys_[j + 1];
    sodium_memzero(&keys_.back(), sizeof(Entry));
    keys_.pop_back();
    if (primary_ > i) --primary_;
    return {};
  }
  return fail("key " + format_key_id(id) + " is not installed");
}

std::optional<KeyId> Keyring::primary() const {
  if (keys_.empty()) return std::nullopt;
  return keys_[primary_].id;
}

std::vector<KeyId> Keyring::ids() const {
  std::vector<KeyId> out;
  out.reserve(keys_.size());
  if (keys_.empty()) return out;
  out.push_back(keys_[primary_].id);
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (i != primary_) out.push_back(keys_[i].id);
  }
  return out;
}

const Key* Keyring::find(KeyId id) const {
  for (const auto& e : keys_) {
    if (e.id == id) return &e.key;
  }
  return nullptr;
}

std::vector<Key> Keyring::keys() const {
  std::vector<Key> out;
  out.reserve(keys_.size());
  if (keys_.empty()) return out;
  out.push_back(keys_[primary_].key);
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (i != primary_) out.push_back(keys_[i].key);
  }
  return out;
}

void Keyring::seal(Purpose purpose, std::span<const std::byte> plain, std::vector<std::byte>& out) const {
  const std::size_t start = out.size();
  if (plaintext()) {
    out.resize(start + 1 + plain.size());
    out[start] = std::byte{kPlainVersion};
    if (!plain.empty()) std::memcpy(out.data() + start + 1, plain.data(), plain.size());
    return;
  }
  ensure_sodium();
  const Entry& k = keys_[primary_];
  out.resize(start + kSealOverhead + plain.size());
  unsigned char* p = as_uchar(out.data() + start);
  p[0] = kSealVersion;
  p[1] = static_cast<unsigned char>(k.id >> 24);
  p[2] = static_cast<unsigned char>(k.id >> 16);
  p[3] = static_cast<unsigned char>(k.id >> 8);
  p[4] = static_cast<unsigned char>(k.id);
  randombytes_buf(p + kNonceOffset, kNonceBytes);
  const auto ad = additional_data(p, purpose);
  unsigned long long written = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(p + kSealHeaderBytes, &written, as_uchar(plain.data()),
                                             plain.size(), ad.data(), ad.size(), nullptr, p + kNonceOffset,
                                             k.key.data());
  WEFT_ASSERT(written == plain.size() + kSealTagBytes);
}

Result<void, OpenError> Keyring::open(Purpose purpose, std::span<const std::byte> sealed,
                                      std::vector<std::byte>& out) const {
  out.clear();
  if (sealed.empty()) return Unexpected(OpenError::kTooShort);
  const auto version = static_cast<std::uint8_t>(sealed[0]);
  if (version == kPlainVersion) {
    if (!plaintext()) return Unexpected(OpenError::kPlaintext);
    out.assign(sealed.begin() + 1, sealed.end());
    return {};
  }
  if (version != kSealVersion) return Unexpected(OpenError::kBadVersion);
  if (plaintext()) return Unexpected(OpenError::kSealedNoKey);
  if (sealed.size() < kSealOverhead) return Unexpected(OpenError::kTooShort);
  const unsigned char* p = as_uchar(sealed.data());
  const Key* key = find(read_key_id(p + 1));
  if (key == nullptr) return Unexpected(OpenError::kUnknownKey);
  ensure_sodium();
  const auto ad = additional_data(p, purpose);
  out.resize(sealed.size() - kSealOverhead);
  unsigned long long written = 0;
  const int rc = crypto_aead_chacha20poly1305_ietf_decrypt(
      as_uchar(out.data()), &written, nullptr, p + kSealHeaderBytes, sealed.size() - kSealHeaderBytes,
      ad.data(), ad.size(), p + kNonceOffset, key->data());
  if (rc != 0) {
    out.clear();
    return Unexpected(OpenError::kAuthFailed);
  }
  WEFT_ASSERT(written == out.size());
  return {};
}

}  // namespace weft::transport
