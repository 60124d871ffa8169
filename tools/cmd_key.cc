// Keys of encrypted repositories: where a passphrase or key file comes
// from, unlocking, the first key slots of `init`, and `gnomon key`.
#include <fcntl.h>
#include <fmt/core.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>

#include "base/random.h"
#include "tools/cli.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

// The passphrases from the environment, taken out of it at start so no
// child (a writer script, mkfs, nbdkit, QEMU) inherits them.
std::string& Secret(const std::string& name) {
  static std::map<std::string, std::string> taken;
  return taken[name];
}

// How long Argon2id takes per password slot (FORMAT.md §14.1).
constexpr double kKdfSeconds = 0.5;

std::string EnvOr(const char* name, const std::string& given) {
  if (!given.empty()) return given;
  const char* v = std::getenv(name);
  return v ? v : "";
}

Status ReadSmallFile(const std::string& path, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(path, errno);
  out->clear();
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || out->size() > (1 << 16)) break;
    out->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return Status::OK();
}

// One line from the terminal with echo off; without a terminal, `none`.
Status Prompt(const std::string& text, std::string* out, const Status& none) {
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return none;
  termios old{};
  const bool tty = ::tcgetattr(fd, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(fd, TCSAFLUSH, &quiet);
  }
  [[maybe_unused]] ssize_t w = ::write(fd, text.data(), text.size());
  out->clear();
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') out->push_back(c);
  if (tty) ::tcsetattr(fd, TCSAFLUSH, &old);
  w = ::write(fd, "\n", 1);
  ::close(fd);
  return Status::OK();
}

Status FirstLine(const std::string& path, std::string* out) {
  GNOMON_RETURN_IF_ERROR(ReadSmallFile(path, out));
  out->erase(std::min(out->find('\n'), out->size()));
  if (!out->empty() && out->back() == '\r') out->pop_back();
  if (out->empty()) return Status::InvalidArgument(path + ": the password file is empty");
  return Status::OK();
}

// A key or password file that cannot be read is a missing key (exit 13).
Status AsKeyError(const Status& s) { return s.ok() ? s : Status::WrongKey(s.message()); }

// The passphrase that unlocks: $GNOMON_PASSWORD, the password file, a prompt.
Status CurrentPassword(const Globals& g, std::string* out) {
  if (const auto& p = Secret(g.key_env.password); !p.empty()) {
    *out = p;
    return Status::OK();
  }
  if (auto f = EnvOr(g.key_env.password_file.c_str(), g.password_file); !f.empty())
    return AsKeyError(FirstLine(f, out));
  return Prompt("passphrase for repository " + g.repo + ": ", out,
                Status::WrongKey(g.repo + ": the repository is encrypted: give the passphrase in " +
                                 g.key_env.password + " or " + g.key_env.password_option +
                                 ", or a key file (no terminal to ask on)"));
}

// A new passphrase: from `env`/`file`, or asked twice on the terminal.
Status NewPassword(const char* env, const std::string& file, std::string* out) {
  if (const auto& p = Secret(env); !p.empty()) {
    *out = p;
    return Status::OK();
  }
  if (!file.empty()) return FirstLine(file, out);
  const Status none = Status::InvalidArgument(
      std::string("a new passphrase is needed: set ") + env + " or give " +
      (std::string_view(env) == "GNOMON_PASSWORD" ? "--password-file or --key-file"
                                                  : "--new-password-file or --new-key-file") +
      " (no terminal to ask on)");
  GNOMON_RETURN_IF_ERROR(Prompt("new passphrase: ", out, none));
  std::string again;
  GNOMON_RETURN_IF_ERROR(Prompt("the same again: ", &again, none));
  if (again != *out) return Status::InvalidArgument("the two passphrases differ");
  if (out->empty()) return Status::InvalidArgument("an empty passphrase protects nothing");
  return Status::OK();
}

// A key file's key; with create, a missing file is made (0600, O_EXCL,
// never through a symlink) with 32 random bytes.
Status KeyFileKey(const std::string& path, bool create, std::string* key, bool* created) {
  *created = false;
  std::string text;
  Status s = ReadSmallFile(path, &text);
  if (s.ok()) return ParseKeyFile(path, text, key);
  if (!create || ::access(path.c_str(), F_OK) == 0) return s;
  std::array<uint8_t, kKeyFileKeySize> k;
  RandomFill(k.data(), k.size());
  key->assign(k.begin(), k.end());
  std::string hex;
  for (uint8_t b : k) hex += fmt::format("{:02x}", b);
  hex += "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(path, errno);
  const bool ok =
      ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return Status::IOError(path + ": cannot write the key file");
  }
  *created = true;
  return Status::OK();
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

void TakeSecretsFromEnvironment() {
  for (const char* name :
       {"GNOMON_PASSWORD", "GNOMON_NEW_PASSWORD", "GNOMON_FROM_PASSWORD", "GNOMON_TO_PASSWORD"})
    if (const char* v = std::getenv(name)) {
      Secret(name) = v;
      ::unsetenv(name);
    }
}

bool KeyGiven(const Globals& g) {
  return !Secret(g.key_env.password).empty() ||
         !EnvOr(g.key_env.password_file.c_str(), g.password_file).empty() ||
         !EnvOr(g.key_env.key_file.c_str(), g.key_file).empty();
}

int UnlockRepo(const Globals& g, Repository* repo) {
  if (!repo->encrypted()) {
    if (!KeyGiven(g)) return kOk;
    return Fail(
        g, Status::WrongKey(repo->path() +
                            ": a key was given but this repository is not encrypted. If it should "
                            "be, its config has been replaced (to make gnomon write in the clear): "
                            "do not use it. Otherwise give no key for it (" +
                            g.key_env.password + ", " + g.key_env.password_file + ", " +
                            g.key_env.key_file + ")"));
  }
  Status s;
  if (auto kf = EnvOr(g.key_env.key_file.c_str(), g.key_file); !kf.empty()) {
    std::string key;
    bool created = false;
    s = AsKeyError(KeyFileKey(kf, false, &key, &created));
    if (s.ok()) s = repo->UnlockWithKeyFile(Bytes(key));
    explicit_bzero(key.data(), key.size());
  } else {
    std::string password;
    s = CurrentPassword(g, &password);
    if (s.ok()) s = repo->UnlockWithPassword(password);
    explicit_bzero(password.data(), password.size());
  }
  return s.ok() ? kOk : Fail(g, s);
}

Status MakeFirstSlots(const Globals& g, const std::string& repo_id,
                      std::shared_ptr<const MasterKey>* key, std::vector<KeySlot>* slots) {
  *key = MasterKey::Generate();
  slots->clear();
  // A key file and a passphrase both given: a slot for each.
  const bool password_given =
      !Secret("GNOMON_PASSWORD").empty() || !EnvOr("GNOMON_PASSWORD_FILE", g.password_file).empty();
  if (auto kf = EnvOr("GNOMON_KEY_FILE", g.key_file); !kf.empty()) {
    std::string k;
    bool created = false;
    GNOMON_RETURN_IF_ERROR(KeyFileKey(kf, true, &k, &created));
    slots->push_back(MakeKeyFileSlot(repo_id, **key, Bytes(k)));
    explicit_bzero(k.data(), k.size());
    if (created && !g.quiet)
      fmt::print(stderr, "gnomon: wrote a new key file {}: keep a copy away from the repository\n",
                 EscapeForTerminal(kf));
    if (!password_given) return Status::OK();
  }
  std::string password;
  GNOMON_RETURN_IF_ERROR(
      NewPassword("GNOMON_PASSWORD", EnvOr("GNOMON_PASSWORD_FILE", g.password_file), &password));
  slots->push_back(MakePasswordSlot(repo_id, **key, password, TuneKdfPasses(kKdfSeconds)));
  explicit_bzero(password.data(), password.size());
  return Status::OK();
}

namespace {

int KeyList(const Globals& g, Repository* repo) {
  std::vector<KeySlot> slots;
  std::vector<Status> errors;
  if (Status s = repo->ListKeySlots(&slots, &errors); !s.ok()) return Fail(g, s);
  if (g.json) {
    json a = json::array();
    for (const auto& k : slots)
      a.push_back({{"id", k.id},
                   {"kind", k.kind},
                   {"created", k.created},
                   {"kdf", k.kind == "password" ? "argon2id" : ""},
                   {"memory", k.memory},
                   {"passes", k.passes},
                   {"key_file_id", k.key_file_id},
                   {"current", k.id == repo->unlocked_slot()}});
    std::cout << json{{"keys", a}}.dump() << "\n";
  } else {
    fmt::print("{:<2}{:<18}{:<10}{:<29}{}\n", "", "ID", "KIND", "CREATED", "KDF / KEY FILE");
    for (const auto& k : slots)
      fmt::print("{:<2}{:<18}{:<10}{:<29}{}\n", k.id == repo->unlocked_slot() ? "*" : "", k.id,
                 k.kind, k.created,
                 k.kind == "password"
                     ? fmt::format("argon2id, {} MiB, {} passes", k.memory >> 20, k.passes)
                     : "key file " + k.key_file_id);
  }
  for (const auto& e : errors)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(e.message()));
  return errors.empty() ? kOk : kDamaged;
}

// A slot for the new secret the options name.
Status NewSlot(const Globals& g, const KeyOptions& opt, Repository* repo, KeySlot* slot) {
  if (!opt.new_key_file.empty()) {
    std::string k;
    bool created = false;
    GNOMON_RETURN_IF_ERROR(KeyFileKey(opt.new_key_file, true, &k, &created));
    std::vector<KeySlot> slots;
    GNOMON_RETURN_IF_ERROR(repo->ListKeySlots(&slots, nullptr));
    for (const auto& s : slots)
      if (s.kind == "key-file" && s.key_file_id == KeyFileId(Bytes(k)))
        return Status::InvalidArgument(opt.new_key_file +
                                       " already opens the repository (key slot " + s.id + ")");
    *slot = MakeKeyFileSlot(repo->config().id, *repo->key(), Bytes(k));
    if (created && !g.quiet)
      fmt::print(stderr, "gnomon: wrote a new key file {}\n", EscapeForTerminal(opt.new_key_file));
    return Status::OK();
  }
  std::string password;
  GNOMON_RETURN_IF_ERROR(NewPassword("GNOMON_NEW_PASSWORD", opt.new_password_file, &password));
  *slot = MakePasswordSlot(repo->config().id, *repo->key(), password, TuneKdfPasses(kKdfSeconds));
  return Status::OK();
}

}  // namespace

int CmdKey(const Globals& g, const KeyOptions& opt) {
  std::unique_ptr<Repository> repo;
  const bool change = opt.action != "list";
  if (int rc = OpenRepo(g, change ? LockMode::kExclusive : LockMode::kShared, "key", &repo))
    return rc;
  if (!repo->encrypted())
    return Fail(g, Status::InvalidArgument(g.repo + ": the repository is not encrypted"), kUsage);
  if (opt.action == "list") return KeyList(g, repo.get());
  if (opt.action == "remove") {
    if (opt.id == repo->unlocked_slot())
      return Fail(g,
                  Status::InvalidArgument("key slot " + opt.id +
                                          " is the one this command was unlocked with; unlock "
                                          "with another to remove it"),
                  kUsage);
    Status s = repo->RemoveKeySlot(opt.id);
    if (!s.ok()) return Fail(g, s, s.IsNotFound() ? kFailed : kUsage);
    if (!g.quiet) fmt::print("removed key slot {}\n", opt.id);
    return kOk;
  }
  KeySlot slot;
  Status s = NewSlot(g, opt, repo.get(), &slot);
  if (s.ok()) s = repo->AddKeySlot(slot);
  // passwd: the new slot is durable before the old one goes.
  if (s.ok() && opt.action == "passwd") s = repo->RemoveKeySlot(repo->unlocked_slot());
  if (!s.ok()) return Fail(g, s);
  if (g.json)
    std::cout << json{{"added", slot.id}, {"kind", slot.kind}}.dump() << "\n";
  else if (!g.quiet)
    fmt::print("added key slot {} ({}){}\n", slot.id, slot.kind,
               opt.action == "passwd" ? "; removed the old one" : "");
  return kOk;
}

}  // namespace gnomon::cli
