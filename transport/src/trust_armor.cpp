// Trust files: the PEM-like armor, names, hex/base64/RFC 3339 rendering, and small-file I/O.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sodium_init.h"
#include "weft/transport/trust.h"

namespace weft::transport {

namespace {

constexpr std::size_t kArmorColumns = 64;
constexpr std::string_view kBegin = "-----BEGIN ";
constexpr std::string_view kEnd = "-----END ";
constexpr std::string_view kDashes = "-----";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// "-----BEGIN X-----" -> X (nullopt if the line is not of that shape).
std::optional<std::string_view> marker(std::string_view line, std::string_view start) {
  if (line.size() < start.size() + kDashes.size() || line.substr(0, start.size()) != start ||
      line.substr(line.size() - kDashes.size()) != kDashes) {
    return std::nullopt;
  }
  return line.substr(start.size(), line.size() - start.size() - kDashes.size());
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

std::string to_hex(std::span<const unsigned char> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0x0f];
  }
  return out;
}

std::string to_base64(std::span<const unsigned char> bytes) {
  detail::ensure_sodium();
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

std::string format_rfc3339(UnixTime t) {
  using namespace std::chrono;
  const sys_days day = floor<days>(t);
  const year_month_day ymd(day);
  const hh_mm_ss<seconds> hms(t - day);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

Result<void> check_trust_name(std::string_view what, std::string_view name) {
  const std::string w(what);
  if (name.empty()) return fail(w + " name is empty");
  if (name.size() > kMaxTrustNameBytes) {
    return fail(w + " name is longer than " + std::to_string(kMaxTrustNameBytes) + " bytes");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok)
      return fail(w + " name '" + std::string(name) + "' may hold only letters, digits, '.', '_' and '-'");
  }
  return {};
}

std::string armor(std::string_view label, std::span<const std::byte> payload) {
  const std::string b64 = to_base64(
      std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  std::string out;
  out.reserve(b64.size() + b64.size() / kArmorColumns + 2 * label.size() + 40);
  out.append(kBegin).append(label).append(kDashes).append("\n");
  for (std::size_t i = 0; i < b64.size(); i += kArmorColumns) {
    out.append(b64, i, kArmorColumns).append("\n");
  }
  out.append(kEnd).append(label).append(kDashes).append("\n");
  return out;
}

Result<std::vector<std::byte>> unarmor(std::string_view text, std::string_view label) {
  const std::string want(label);
  if (text.size() > kMaxArmoredBytes) return fail("too large for a " + want + " (over 64 KiB)");
  enum { kBefore, kInside, kAfter } state = kBefore;
  std::string b64;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty()) continue;
    if (state == kBefore) {
      auto got = marker(line, kBegin);
      if (!got) return fail("not a " + want + " (no -----BEGIN " + want + "----- line)");
      if (*got != label) return fail("holds a " + std::string(*got) + " block, not a " + want);
      state = kInside;
    } else if (state == kInside) {
      if (auto end = marker(line, kEnd)) {
        if (*end != label) return fail(want + ": the END line names " + std::string(*end));
        state = kAfter;
        continue;
      }
      if (line.size() > kArmorColumns) return fail(want + ": a base64 line is longer than 64 columns");
      b64.append(line);
    } else {
      return fail(want + ": text after the END line");
    }
  }
  if (state == kBefore) return fail("empty: not a " + want);
  if (state == kInside) return fail(want + ": truncated (no END line)");
  if (b64.empty()) return fail(want + ": no data between BEGIN and END");
  detail::ensure_sodium();
  std::vector<std::byte> out(b64.size() / 4 * 3 + 3);
  std::size_t n = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), b64.data(), b64.size(),
                        nullptr, &n, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64.data() + b64.size()) {
    return fail(want + ": the base64 is damaged or truncated");
  }
  out.resize(n);
  return out;
}

Result<std::string> read_text_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno_text(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const auto r = fail(errno_text(path));
    ::close(fd);
    return r;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(path + ": not a regular file");
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const auto r = fail(errno_text(path));
      ::close(fd);
      return r;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > kMaxArmoredBytes) {
      ::close(fd);
      return fail(path + ": larger than 64 KiB, not a weft key or certificate file");
    }
  }
  ::close(fd);
  return out;
}

namespace {

Result<void> write_all(int fd, const std::string& path, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_text("write " + path));
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  if (::fsync(fd) != 0) return fail(errno_text("fsync " + path));
  return {};
}

}  // namespace

Result<void> write_new_file(const std::string& path, std::string_view text, unsigned mode) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, static_cast<mode_t>(mode));
  if (fd < 0) {
    if (errno == EEXIST) return fail(path + " exists; refusing to overwrite it");
    return fail(errno_text("cannot create " + path));
  }
  // The umask may have cleared bits of `mode`; a secret file must end up exactly as asked.
  Result<void> r = ::fchmod(fd, static_cast<mode_t>(mode)) == 0
                       ? write_all(fd, path, text)
                       : Result<void>(fail(errno_text("chmod " + path)));
  ::close(fd);
  if (!r) ::unlink(path.c_str());
  return r;
}

Result<void> replace_file(const std::string& path, std::string_view text, unsigned mode) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  if (auto r = write_new_file(tmp, text, mode); !r) return r;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const auto r = fail(errno_text("rename to " + path));
    ::unlink(tmp.c_str());
    return r;
  }
  return {};
}

}  // namespace weft::transport
