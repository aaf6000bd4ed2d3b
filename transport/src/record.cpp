#include "weft/transport/record.h"

#include <dlfcn.h>
#include <openssl/evp.h>  // types and prototypes only: libcrypto is loaded on first use, below

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "sodium_init.h"

namespace weft::transport {

namespace {

using detail::ensure_sodium;

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == kRecordTagBytes);
static_assert(crypto_auth_hmacsha256_KEYBYTES == 32 && crypto_auth_hmacsha256_BYTES == 32);
static_assert(kMaxRecordBytes < (std::size_t{1} << 24));  // the length fits in 3 bytes
static_assert(kMaxRecordBytes < (std::size_t{1} << 30));  // and in OpenSSL's int lengths

constexpr char kRekeyLabel[] = "weft rekey";  // used without its NUL
constexpr std::size_t kGcmNonceBytes = 12;

const unsigned char* as_uchar(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }
unsigned char* as_uchar(std::byte* p) { return reinterpret_cast<unsigned char*>(p); }

// The counter in the last 8 bytes, big-endian, zeros before it.
template <std::size_t N>
std::array<unsigned char, N> counter_nonce(std::uint64_t counter) {
  std::array<unsigned char, N> nonce{};
  for (std::size_t i = 0; i < 8; ++i) nonce[N - 1 - i] = static_cast<unsigned char>(counter >> (8 * i));
  return nonce;
}

bool valid_type(std::uint8_t t) {
  return t == static_cast<std::uint8_t>(RecordType::kData) || t == static_cast<std::uint8_t>(RecordType::kRekey) ||
         t == static_cast<std::uint8_t>(RecordType::kClose);
}

// Checks a header; returns the length of what follows it (ciphertext and tag).
Result<std::size_t, RecordError> parse_header(const unsigned char* h) {
  const std::size_t len = (std::size_t{h[1]} << 16) | (std::size_t{h[2]} << 8) | std::size_t{h[3]};
  if (len > kMaxRecordPlaintext + kRecordTagBytes) return Unexpected<RecordError>(RecordError::kTooLarge);
  if (!valid_type(h[0]) || len < kRecordTagBytes) return Unexpected<RecordError>(RecordError::kBadHeader);
  return len;
}

// libcrypto's EVP AES-256-GCM, loaded with dlopen the first time a record layer needs it rather
// than linked: mapping it costs every agent ~1.5 MiB of RSS and ~0.4 MiB of private memory at
// start-up, and an agent that carries no mesh traffic never needs it. Without libcrypto the same
// cipher (same wire bytes) runs on libsodium's AES-256-GCM, about half as fast here.
struct Evp {
  decltype(&EVP_CIPHER_CTX_new) ctx_new = nullptr;
  decltype(&EVP_CIPHER_CTX_free) ctx_free = nullptr;
  decltype(&EVP_CIPHER_CTX_ctrl) ctx_ctrl = nullptr;
  decltype(&EVP_aes_256_gcm) aes_256_gcm = nullptr;
  decltype(&EVP_EncryptInit_ex) encrypt_init = nullptr;
  decltype(&EVP_EncryptUpdate) encrypt_update = nullptr;
  decltype(&EVP_EncryptFinal_ex) encrypt_final = nullptr;
  decltype(&EVP_DecryptInit_ex) decrypt_init = nullptr;
  decltype(&EVP_DecryptUpdate) decrypt_update = nullptr;
  decltype(&EVP_DecryptFinal_ex) decrypt_final = nullptr;
  bool ok = false;
};

template <typename F>
bool load_symbol(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(::dlsym(lib, name));
  return out != nullptr;
}

Evp load_evp() {
  Evp e;
  if (std::getenv("WEFT_NO_LIBCRYPTO") != nullptr) return e;  // tests of the fallback
  void* lib = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return e;
  e.ok = load_symbol(lib, "EVP_CIPHER_CTX_new", e.ctx_new) && load_symbol(lib, "EVP_CIPHER_CTX_free", e.ctx_free) &&
         load_symbol(lib, "EVP_CIPHER_CTX_ctrl", e.ctx_ctrl) && load_symbol(lib, "EVP_aes_256_gcm", e.aes_256_gcm) &&
         load_symbol(lib, "EVP_EncryptInit_ex", e.encrypt_init) &&
         load_symbol(lib, "EVP_EncryptUpdate", e.encrypt_update) &&
         load_symbol(lib, "EVP_EncryptFinal_ex", e.encrypt_final) &&
         load_symbol(lib, "EVP_DecryptInit_ex", e.decrypt_init) &&
         load_symbol(lib, "EVP_DecryptUpdate", e.decrypt_update) &&
         load_symbol(lib, "EVP_DecryptFinal_ex", e.decrypt_final);
  return e;  // the library stays loaded for the life of the process
}

const Evp& evp() {
  static const Evp e = load_evp();  // thread-safe initialisation
  return e;
}

// Where records go: a vector (zero-filled as it grows) or a ByteBuffer (not).
unsigned char* grow(std::vector<std::byte>& out, std::size_t n) {
  const std::size_t at = out.size();
  out.resize(at + n);
  return as_uchar(out.data() + at);
}
unsigned char* grow(ByteBuffer& out, std::size_t n) {
  const auto room = out.room(n);
  out.commit(n);
  return as_uchar(room.data());
}
void shrink(std::vector<std::byte>& out, std::size_t size) { out.resize(size); }
void shrink(ByteBuffer& out, std::size_t size) { out.truncate(size); }
void reserve_more(std::vector<std::byte>& out, std::size_t n) { out.reserve(out.size() + n); }
void reserve_more(ByteBuffer& out, std::size_t n) { (void)out.room(n); }

}  // namespace

bool libcrypto_loaded() { return evp().ok; }

namespace detail {

// Reads the concatenation of a gather list front to back.
struct Gather {
  std::span<const std::span<const std::byte>> pieces;
  std::size_t i = 0;
  std::size_t off = 0;
  // The next contiguous bytes, at most `max` of them; consumed. Empty at the end.
  std::span<const std::byte> next(std::size_t max) {
    while (i < pieces.size() && off == pieces[i].size()) {
      ++i;
      off = 0;
    }
    if (i == pieces.size() || max == 0) return {};
    const std::size_t n = std::min(max, pieces[i].size() - off);
    const auto part = pieces[i].subspan(off, n);
    off += n;
    return part;
  }
};


// One direction's AEAD: the key and, for AES-256-GCM, the EVP context that holds its key schedule
// (initialised once per key, not per record: that set-up is what makes small records slow).
class RecordAead {
 public:
  RecordAead(Cipher cipher, const RecordKey& key, bool encrypt) : cipher_(cipher), encrypt_(encrypt), key_(key) {
    WEFT_CHECK(cipher == Cipher::kAes256Gcm || cipher == Cipher::kXChaCha20Poly1305);
    if (cipher_ == Cipher::kAes256Gcm && evp().ok) {
      ctx_ = evp().ctx_new();
      WEFT_CHECK(ctx_ != nullptr);  // out of memory at connection set-up
      const int rc = encrypt_ ? evp().encrypt_init(ctx_, evp().aes_256_gcm(), nullptr, key_.data(), nullptr)
                              : evp().decrypt_init(ctx_, evp().aes_256_gcm(), nullptr, key_.data(), nullptr);
      WEFT_CHECK(rc == 1);
    } else if (cipher_ == Cipher::kAes256Gcm) {
      // Callers choose AES-GCM only where aes_ni_available(), which is libsodium's condition too.
      WEFT_CHECK(crypto_aead_aes256gcm_is_available() == 1);
      crypto_aead_aes256gcm_beforenm(&sodium_gcm_, key_.data());
    }
  }
  ~RecordAead() {
    if (ctx_ != nullptr) evp().ctx_free(ctx_);  // cleanses the key schedule
    sodium_memzero(&sodium_gcm_, sizeof sodium_gcm_);
    sodium_memzero(key_.data(), key_.size());
    if (!gathered_.empty()) sodium_memzero(gathered_.data(), gathered_.size());
  }
  RecordAead(const RecordAead&) = delete;
  RecordAead& operator=(const RecordAead&) = delete;

  // Writes n + 16 bytes to out.
  bool seal(std::uint64_t counter, const unsigned char* ad, const unsigned char* plain, std::size_t n,
            unsigned char* out) {
    if (cipher_ == Cipher::kXChaCha20Poly1305) {
      const auto nonce = counter_nonce<crypto_aead_xchacha20poly1305_ietf_NPUBBYTES>(counter);
      unsigned long long clen = 0;
      return crypto_aead_xchacha20poly1305_ietf_encrypt(out, &clen, plain, n, ad, kRecordHeaderBytes, nullptr,
                                                        nonce.data(), key_.data()) == 0;
    }
    const auto nonce = counter_nonce<kGcmNonceBytes>(counter);
    if (ctx_ == nullptr) {  // libsodium: ciphertext then tag, the same bytes as below
      unsigned long long clen = 0;
      return crypto_aead_aes256gcm_encrypt_afternm(out, &clen, plain, n, ad, kRecordHeaderBytes, nullptr, nonce.data(),
                                                   &sodium_gcm_) == 0;
    }
    const Evp& e = evp();
    int len = 0;
    return e.encrypt_init(ctx_, nullptr, nullptr, nullptr, nonce.data()) == 1 &&
           e.encrypt_update(ctx_, nullptr, &len, ad, static_cast<int>(kRecordHeaderBytes)) == 1 &&
           (n == 0 || e.encrypt_update(ctx_, out, &len, plain, static_cast<int>(n)) == 1) &&
           e.encrypt_final(ctx_, out + n, &len) == 1 &&
           e.ctx_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kRecordTagBytes), out + n) == 1;
  }

  // The same for the next n bytes of `in`: libcrypto takes the pieces as they are; libsodium's
  // one-shot API gets them gathered in a scratch buffer when they are not contiguous.
  bool seal(std::uint64_t counter, const unsigned char* ad, Gather& in, std::size_t n, unsigned char* out) {
    if (ctx_ != nullptr) {
      const Evp& e = evp();
      const auto nonce = counter_nonce<kGcmNonceBytes>(counter);
      int len = 0;
      if (e.encrypt_init(ctx_, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
          e.encrypt_update(ctx_, nullptr, &len, ad, static_cast<int>(kRecordHeaderBytes)) != 1) {
        return false;
      }
      for (std::size_t done = 0; done < n;) {
        const auto part = in.next(n - done);
        WEFT_CHECK(!part.empty());  // the caller counted the bytes
        if (e.encrypt_update(ctx_, out + done, &len, as_uchar(part.data()), static_cast<int>(part.size())) != 1) {
          return false;
        }
        done += part.size();
      }
      return e.encrypt_final(ctx_, out + n, &len) == 1 &&
             e.ctx_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kRecordTagBytes), out + n) == 1;
    }
    const auto first = in.next(n);
    if (first.size() == n) return seal(counter, ad, as_uchar(first.data()), n, out);
    gathered_.resize(n);
    std::copy(first.begin(), first.end(), gathered_.begin());
    for (std::size_t done = first.size(); done < n;) {
      const auto part = in.next(n - done);
      WEFT_CHECK(!part.empty());
      std::copy(part.begin(), part.end(), gathered_.begin() + static_cast<std::ptrdiff_t>(done));
      done += part.size();
    }
    return seal(counter, ad, as_uchar(gathered_.data()), n, out);
  }

  // Reads n >= 16 bytes (ciphertext and tag), writes n - 16 bytes to out; false if the tag fails
  // (out then holds garbage that the caller wipes).
  bool open(std::uint64_t counter, const unsigned char* ad, const unsigned char* in, std::size_t n,
            unsigned char* out) {
    const std::size_t m = n - kRecordTagBytes;
    if (cipher_ == Cipher::kXChaCha20Poly1305) {
      const auto nonce = counter_nonce<crypto_aead_xchacha20poly1305_ietf_NPUBBYTES>(counter);
      unsigned long long plen = 0;
      return crypto_aead_xchacha20poly1305_ietf_decrypt(out, &plen, nullptr, in, n, ad, kRecordHeaderBytes,
                                                        nonce.data(), key_.data()) == 0;
    }
    const auto nonce = counter_nonce<kGcmNonceBytes>(counter);
    if (ctx_ == nullptr) {
      unsigned long long plen = 0;
      return crypto_aead_aes256gcm_decrypt_afternm(out, &plen, nullptr, in, n, ad, kRecordHeaderBytes, nonce.data(),
                                                   &sodium_gcm_) == 0;
    }
    std::array<unsigned char, kRecordTagBytes> tag{};  // SET_TAG takes a non-const pointer
    std::copy_n(in + m, tag.size(), tag.begin());
    const Evp& e = evp();
    int len = 0;
    return e.decrypt_init(ctx_, nullptr, nullptr, nullptr, nonce.data()) == 1 &&
           e.decrypt_update(ctx_, nullptr, &len, ad, static_cast<int>(kRecordHeaderBytes)) == 1 &&
           (m == 0 || e.decrypt_update(ctx_, out, &len, in, static_cast<int>(m)) == 1) &&
           e.ctx_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag.size()), tag.data()) == 1 &&
           e.decrypt_final(ctx_, out + m, &len) == 1;
  }

  // key' = HMAC-SHA256(key, "weft rekey"): one-way, so a stolen new key does not open old records.
  void rekey() {
    RecordKey next{};
    crypto_auth_hmacsha256(next.data(), reinterpret_cast<const unsigned char*>(kRekeyLabel), sizeof kRekeyLabel - 1,
                           key_.data());
    key_ = next;
    sodium_memzero(next.data(), next.size());
    if (ctx_ != nullptr) {
      const int rc = encrypt_ ? evp().encrypt_init(ctx_, nullptr, nullptr, key_.data(), nullptr)
                              : evp().decrypt_init(ctx_, nullptr, nullptr, key_.data(), nullptr);
      WEFT_CHECK(rc == 1);  // only sets the key on an initialised context
    } else if (cipher_ == Cipher::kAes256Gcm) {
      crypto_aead_aes256gcm_beforenm(&sodium_gcm_, key_.data());
    }
  }

 private:
  Cipher cipher_;
  bool encrypt_;
  RecordKey key_;
  EVP_CIPHER_CTX* ctx_ = nullptr;       // AES-256-GCM through libcrypto
  std::vector<std::byte> gathered_;  // libsodium: a record's plaintext from several pieces
  crypto_aead_aes256gcm_state sodium_gcm_{};  // AES-256-GCM through libsodium, when libcrypto is missing
};

}  // namespace detail

const char* to_string(Cipher c) {
  switch (c) {
    case Cipher::kAes256Gcm: return "aes-256-gcm";
    case Cipher::kXChaCha20Poly1305: return "xchacha20-poly1305";
  }
  return "unknown";
}

const char* to_string(RecordError e) {
  switch (e) {
    case RecordError::kBadTag: return "bad_tag";
    case RecordError::kTooLarge: return "too_large";
    case RecordError::kBadHeader: return "bad_header";
    case RecordError::kBadControl: return "bad_control";
    case RecordError::kAfterClose: return "after_close";
    case RecordError::kTruncated: return "truncated";
    case RecordError::kExhausted: return "exhausted";
  }
  return "unknown";
}

const char* to_string(SealError e) {
  switch (e) {
    case SealError::kTooLarge: return "too_large";
    case SealError::kClosed: return "closed";
    case SealError::kExhausted: return "exhausted";
    case SealError::kControlPayload: return "control_payload";
    case SealError::kCrypto: return "crypto";
  }
  return "unknown";
}

bool aes_ni_available() {
  ensure_sodium();
  return crypto_aead_aes256gcm_is_available() == 1;
}

Cipher preferred_cipher() { return aes_ni_available() ? Cipher::kAes256Gcm : Cipher::kXChaCha20Poly1305; }

// ---- RecordSealer

RecordSealer::RecordSealer(Cipher cipher, const RecordKey& key, RecordOptions options)
    : aead_((ensure_sodium(), std::make_unique<detail::RecordAead>(cipher, key, true))),
      cipher_(cipher),
      options_(options) {}
RecordSealer::~RecordSealer() = default;
RecordSealer::RecordSealer(RecordSealer&&) noexcept = default;
RecordSealer& RecordSealer::operator=(RecordSealer&&) noexcept = default;

Result<void, SealError> RecordSealer::refuse(SealError e) {
  ++stats_.seal_refused[static_cast<std::size_t>(e)];
  return Unexpected<SealError>(e);
}

bool RecordSealer::seal_one(unsigned char* p, RecordType type, detail::Gather& in, std::size_t n) {
  const std::size_t len = n + kRecordTagBytes;
  p[0] = static_cast<unsigned char>(type);
  p[1] = static_cast<unsigned char>(len >> 16);
  p[2] = static_cast<unsigned char>(len >> 8);
  p[3] = static_cast<unsigned char>(len);
  if (!aead_->seal(counter_, p, in, n, p + kRecordHeaderBytes)) return false;
  ++counter_;
  ++under_key_;
  ++stats_.records_sealed;
  if (type == RecordType::kData) stats_.bytes_sealed += n;
  if (type == RecordType::kRekey) {
    aead_->rekey();
    under_key_ = 0;
    ++stats_.rekeys;
  }
  if (type == RecordType::kClose) closed_ = true;
  return true;
}

template <class Out>
Result<void, SealError> RecordSealer::seal_record(Out& out, RecordType type, detail::Gather& in, std::size_t n) {
  WEFT_CHECK(aead_ != nullptr);  // not moved from
  WEFT_CHECK(valid_type(static_cast<std::uint8_t>(type)));
  if (closed_) return refuse(SealError::kClosed);
  if (n > kMaxRecordPlaintext) return refuse(SealError::kTooLarge);
  if (type != RecordType::kData && n != 0) return refuse(SealError::kControlPayload);
  const bool rekey_due = type == RecordType::kData && under_key_ >= options_.rekey_interval;
  if (options_.max_records - std::min(counter_, options_.max_records) < (rekey_due ? 2u : 1u)) {
    return refuse(SealError::kExhausted);
  }
  const std::size_t at = out.size();
  detail::Gather none;
  if ((rekey_due && !seal_one(grow(out, kRecordOverhead), RecordType::kRekey, none, 0)) ||
      !seal_one(grow(out, kRecordOverhead + n), type, in, n)) {
    // Only an allocation failure inside the cipher library gets here; the key may have moved on
    // already, so this direction cannot continue.
    shrink(out, at);
    closed_ = true;
    return refuse(SealError::kCrypto);
  }
  return {};
}

template <class Out>
Result<void, SealError> RecordSealer::seal_gather(Out& out, detail::Gather& in, std::size_t total) {
  reserve_more(out, total + (total / kMaxRecordPlaintext + 2) * kRecordOverhead);
  while (total > 0) {
    const std::size_t n = std::min(total, kMaxRecordPlaintext);
    if (auto r = seal_record(out, RecordType::kData, in, n); !r) return r;
    total -= n;
  }
  return {};
}

namespace {
std::span<const std::span<const std::byte>> one_piece(const std::span<const std::byte>& plain) { return {&plain, 1}; }
}  // namespace

Result<void, SealError> RecordSealer::seal_into(std::vector<std::byte>& out, RecordType type,
                                                std::span<const std::byte> plain) {
  detail::Gather in{one_piece(plain)};
  return seal_record(out, type, in, plain.size());
}

Result<void, SealError> RecordSealer::seal_into(ByteBuffer& out, RecordType type, std::span<const std::byte> plain) {
  detail::Gather in{one_piece(plain)};
  return seal_record(out, type, in, plain.size());
}

Result<void, SealError> RecordSealer::seal_stream_into(std::vector<std::byte>& out, std::span<const std::byte> plain) {
  detail::Gather in{one_piece(plain)};
  return seal_gather(out, in, plain.size());
}

Result<void, SealError> RecordSealer::seal_stream_into(ByteBuffer& out, std::span<const std::byte> plain) {
  detail::Gather in{one_piece(plain)};
  return seal_gather(out, in, plain.size());
}

Result<void, SealError> RecordSealer::seal_stream_into(ByteBuffer& out,
                                                       std::span<const std::span<const std::byte>> pieces) {
  std::size_t total = 0;
  for (const auto& p : pieces) total += p.size();
  detail::Gather in{pieces};
  return seal_gather(out, in, total);
}

// ---- RecordOpener

RecordOpener::RecordOpener(Cipher cipher, const RecordKey& key, RecordOptions options)
    : aead_((ensure_sodium(), std::make_unique<detail::RecordAead>(cipher, key, false))), options_(options) {}
RecordOpener::~RecordOpener() = default;
RecordOpener::RecordOpener(RecordOpener&&) noexcept = default;
RecordOpener& RecordOpener::operator=(RecordOpener&&) noexcept = default;

Unexpected<RecordError> RecordOpener::fail_with(RecordError e) {
  if (!failed_) {
    failed_ = true;
    error_ = e;
    ++stats_.open_failed[static_cast<std::size_t>(e)];
    pending_.clear();
    pending_.shrink_to_fit();
  }
  return Unexpected<RecordError>(error_);
}

template <class Out>
Result<void, RecordError> RecordOpener::open_one(std::span<const std::byte> record, Out& plain_out) {
  const unsigned char* h = as_uchar(record.data());
  const auto type = static_cast<RecordType>(h[0]);
  const std::size_t len = record.size() - kRecordHeaderBytes;  // checked by parse_header
  if (counter_ >= options_.max_records) return fail_with(RecordError::kExhausted);
  const std::size_t plain_len = len - kRecordTagBytes;
  const std::size_t at = plain_out.size();
  unsigned char* dst = grow(plain_out, plain_len);
  const bool authentic = aead_->open(counter_, h, h + kRecordHeaderBytes, len, dst);
  if (!authentic || (type != RecordType::kData && plain_len != 0)) {
    sodium_memzero(dst, plain_len);  // EVP writes plaintext before it checks the tag
    shrink(plain_out, at);
    return fail_with(authentic ? RecordError::kBadControl : RecordError::kBadTag);
  }
  ++counter_;
  ++stats_.records_opened;
  if (type == RecordType::kData) stats_.bytes_opened += plain_len;
  if (type == RecordType::kRekey) {
    aead_->rekey();
    ++stats_.rekeys;
  }
  if (type == RecordType::kClose) closed_ = true;
  return {};
}

Result<RecordOpener::Progress, RecordError> RecordOpener::feed(std::span<const std::byte> in,
                                                                std::vector<std::byte>& plain_out) {
  return feed_into(in, plain_out);
}

Result<RecordOpener::Progress, RecordError> RecordOpener::feed(std::span<const std::byte> in, ByteBuffer& plain_out) {
  return feed_into(in, plain_out);
}

template <class Out>
Result<RecordOpener::Progress, RecordError> RecordOpener::feed_into(std::span<const std::byte> in, Out& plain_out) {
  WEFT_CHECK(aead_ != nullptr);  // not moved from
  if (failed_) return Unexpected<RecordError>(error_);
  Progress progress;
  while (!in.empty()) {
    if (closed_) return fail_with(RecordError::kAfterClose);
    if (pending_.empty()) {
      // Fast path: whole records straight from the caller's bytes, no copy.
      if (in.size() >= kRecordHeaderBytes) {
        auto len = parse_header(as_uchar(in.data()));
        if (!len) return fail_with(len.error());
        const std::size_t total = kRecordHeaderBytes + *len;
        if (in.size() >= total) {
          if (auto r = open_one(in.first(total), plain_out); !r) return Unexpected<RecordError>(r.error());
          ++progress.records;
          in = in.subspan(total);
          continue;
        }
      }
      // An incomplete record (its header, if complete, is valid: so at most kMaxRecordBytes).
      pending_.reserve(kMaxRecordBytes);
      pending_.assign(in.begin(), in.end());
      break;
    }
    // Top up the buffered record: first its header (checked as soon as it is complete), then the rest.
    if (pending_.size() < kRecordHeaderBytes) {
      const std::size_t take = std::min(kRecordHeaderBytes - pending_.size(), in.size());
      pending_.insert(pending_.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(take));
      in = in.subspan(take);
      if (pending_.size() < kRecordHeaderBytes) break;
    }
    auto len = parse_header(as_uchar(pending_.data()));
    if (!len) return fail_with(len.error());
    const std::size_t want = kRecordHeaderBytes + *len;
    const std::size_t take = std::min(want - pending_.size(), in.size());
    pending_.insert(pending_.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(take));
    in = in.subspan(take);
    if (pending_.size() < want) break;
    if (auto r = open_one(pending_, plain_out); !r) return Unexpected<RecordError>(r.error());
    ++progress.records;
    pending_.clear();
  }
  progress.closed = closed_;
  return progress;
}

Result<void, RecordError> RecordOpener::finish() {
  if (failed_) return Unexpected<RecordError>(error_);
  if (!closed_ || !pending_.empty()) return fail_with(RecordError::kTruncated);
  return {};
}

}  // namespace weft::transport
