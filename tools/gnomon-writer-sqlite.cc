// gnomon-writer-sqlite: a writer for SQLite databases, in a process of its
// own, through the writer library (vss/writer_server.h). Run it beside the
// application; every gnomon backup of the volume the databases live on then
// makes them consistent:
//   PrepareForBackup  reads the backup options (checkpoint=MODE) and the
//                    previous backup stamp of each database; an option it
//                    does not know fails the event (the backup, exit 4)
//   PrepareForSnapshot  PRAGMA wal_checkpoint(MODE), TRUNCATE by default: the
//                    committed pages go into the database file, so the image
//                    needs no WAL replay; then BEGIN IMMEDIATE: takes the
//                    write lock, held through Freeze until Thaw, so no
//                    transaction commits while the snapshot is taken (readers
//                    go on); with the lock held, the database's state at the
//                    snapshot is read for the stamp
//   Thaw, Abort      ROLLBACK: writers go on
// The lock is taken in PrepareForSnapshot, not Freeze, because SQLite's lock
// is not fair: an application that commits in a tight loop takes it back
// within microseconds, and a Freeze must not spend its window waiting. In
// PrepareForSnapshot the writer may wait (polling every 100 us, up to 10 s),
// and Freeze then holds it at once.
//   PostSnapshot     a backup stamp per database (JSON, gnomon.sqlite-stamp/1:
//                    its state at the snapshot), and backup metadata saying
//                    what the writer did and, on an incremental or
//                    differential, what changed since the stamp handed back
//   BackupComplete   remembers the stamps of backups that succeeded, so the
//                    next incremental can tell its own stamp from another's
// Each database is one component holding its file, its -wal and its -shm.
// The writer declares VSS_BS_TIMESTAMPED: gnomon keeps its stamps and hands
// each back on the next incremental (docs/vss.md, "Backup stamps").
//
// Usage: gnomon-writer-sqlite [--name NAME] [--dir DIR] [--freeze-timeout S] DB...
#include <sqlite3.h>
#include <unistd.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>
#include "base/json.h"
#include "tools/cli_checks.h"

#include "vss/backup_options.h"
#include "vss/writer_server.h"

namespace {

using nlohmann::json;
namespace vss = gnomon::vss;

constexpr const char* kStampSchema = "gnomon.sqlite-stamp/1";

// The backup options this writer understands (gnomon backup --writer-option).
const std::vector<vss::BackupOptionSpec>& Options() {
  static const std::vector<vss::BackupOptionSpec> kSpec = {
      {"checkpoint", {"passive", "full", "restart", "truncate"}, "truncate"}};
  return kSpec;
}

struct Database {
  std::string path;
  sqlite3* db = nullptr;
  bool in_txn = false;
  // This backup's: the options and previous stamp (PrepareForBackup), what
  // the checkpoint did and the state at the snapshot (PrepareForSnapshot).
  std::map<std::string, std::string> options;
  std::string previous_stamp;
  json checkpoint, state;
};

std::string Dir(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "." : (s == 0 ? "/" : p.substr(0, s));
}
std::string Base(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}
bool IsIncremental(vss::BackupType t) {
  return t == vss::BackupType::kIncremental || t == vss::BackupType::kDifferential;
}

class SqliteWriter : public vss::Writer {
 public:
  explicit SqliteWriter(std::vector<Database> dbs) : dbs_(std::move(dbs)) {
    for (auto& d : dbs_) vss::ReadBackupOptions("", Options(), &d.options);  // the defaults
  }
  ~SqliteWriter() override {
    for (auto& d : dbs_) sqlite3_close(d.db);
  }

  bool OnIdentify(vss::WriterMetadata* md) override {
    // Stamps (TIMESTAMPED) say what changed since the backup they came from.
    md->backup_schema = vss::schema::kTimestamped | vss::schema::kIncremental |
                        vss::schema::kDifferential | vss::schema::kCopy;
    for (const auto& d : dbs_) {
      vss::ComponentInfo c;
      c.type = vss::ComponentType::kDatabase;
      c.logical_path = "sqlite";
      c.name = d.path;
      c.caption = "SQLite database " + Base(d.path);
      for (const char* suffix : {"", "-wal", "-shm"}) {
        vss::FileSpec f;
        f.path = Dir(d.path);
        f.spec = Base(d.path) + suffix;
        f.is_log = std::string(suffix) == "-wal";
        c.files.push_back(f);
      }
      md->components.push_back(c);
    }
    return true;
  }

  bool OnPrepareBackup(vss::WriterComponents* comps) override {
    for (auto& d : dbs_) {  // the defaults, for a database this backup leaves out
      vss::ReadBackupOptions("", Options(), &d.options);
      d.previous_stamp.clear();
      d.checkpoint = d.state = json();
    }
    for (auto& c : *comps) {
      Database* d = Find(c.name());
      if (!d) continue;
      if (gnomon::Status s = vss::ReadBackupOptions(c.GetBackupOptions(), Options(), &d->options);
          !s.ok()) {
        // Not ignored: the user asked for a backup this writer cannot make.
        SetWriterFailure(vss::VSS_E_WRITERERROR_NONRETRYABLE, d->path + ": " + s.message());
        return false;
      }
      d->previous_stamp = c.GetPreviousBackupStamp();
    }
    return true;
  }

  bool OnPrepareSnapshot() override {
    for (auto& d : dbs_) {
      // Busy readers can stop a checkpoint short; that is not an error, only
      // a longer WAL in the image (which SQLite replays when it opens it).
      sqlite3_busy_timeout(d.db, 10000);
      const std::string mode = d.options["checkpoint"];
      std::vector<std::string> row;
      if (!Query(d, "PRAGMA wal_checkpoint(" + mode + ")", "checkpointing", &row)) return false;
      d.checkpoint = {{"mode", mode}};
      if (row.size() == 3)
        d.checkpoint.update({{"busy", std::stol(row[0])},
                             {"wal_frames", std::stol(row[1])},
                             {"checkpointed_frames", std::stol(row[2])}});
    }
    for (auto& d : dbs_) {
      sqlite3_busy_handler(d.db, PollBusy, nullptr);
      std::vector<std::string> none;
      const bool ok = Query(d, "BEGIN IMMEDIATE", "taking the write lock", &none);
      sqlite3_busy_timeout(d.db, 10000);
      if (!ok) {
        Release();
        return false;
      }
      d.in_txn = true;
      // Nothing commits until Thaw: this is the state the snapshot holds.
      d.state = State(d);
    }
    return true;
  }

  bool OnFreeze() override { return true; }  // the write locks are held
  bool OnThaw() override { return Release(); }
  bool OnAbort() override { return Release(); }

  bool OnPostSnapshot(vss::WriterComponents* comps) override {
    for (auto& c : *comps) {
      Database* d = Find(c.name());
      if (!d || d->state.is_null()) continue;
      c.SetBackupStamp(d->state.dump());
      json md{{"backup_type", vss::BackupTypeName(GetBackupType())},
              {"options", d->options},
              {"checkpoint", d->checkpoint},
              {"previous_stamp", d->previous_stamp}};
      if (IsIncremental(GetBackupType())) md["since_previous"] = SincePrevious(*d);
      c.SetBackupMetadata(md.dump());
    }
    return true;
  }

  bool OnBackupComplete(vss::WriterComponents* comps) override {
    // Stamps of backups that can be built on: the next incremental's
    // previous stamp should be one of them.
    if (GetBackupType() == vss::BackupType::kCopy) return true;
    for (auto& c : *comps)
      if (c.GetBackupSucceeded() && !c.GetBackupStamp().empty()) {
        if (issued_.size() >= 256) issued_.erase(issued_.begin());
        issued_.insert(c.GetBackupStamp());
      }
    return true;
  }

 private:
  Database* Find(const std::string& path) {
    for (auto& d : dbs_)
      if (d.path == path) return &d;
    return nullptr;
  }

  // The database at the snapshot (write lock held), as the stamp records it.
  json State(Database& d) {
    auto num = [&](const char* pragma) {
      std::vector<std::string> row;
      return QuietQuery(d, std::string("PRAGMA ") + pragma, &row) && !row.empty()
                 ? std::stoll(row[0])
                 : -1ll;
    };
    std::vector<std::string> mode;
    QuietQuery(d, "PRAGMA journal_mode", &mode);
    return json{{"stamp", kStampSchema},
                {"database", d.path},
                {"page_size", num("page_size")},
                {"page_count", num("page_count")},
                {"freelist_count", num("freelist_count")},
                {"schema_version", num("schema_version")},
                {"journal_mode", mode.empty() ? "" : mode[0]},
                {"change_counter", ChangeCounter(d)},
                {"writer", session_},
                {"data_version", num("data_version")}};
  }

  // The file change counter (header bytes 24..27), read through SQLite's own
  // file handle: opening the file a second time would drop the process's
  // POSIX locks on it when closed. In rollback-journal mode it grows by one
  // per write transaction; in WAL mode it does not.
  long long ChangeCounter(Database& d) {
    sqlite3_file* f = nullptr;
    unsigned char h[100];
    if (sqlite3_file_control(d.db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
        !f->pMethods || f->pMethods->xRead(f, h, sizeof h, 0) != SQLITE_OK)
      return -1;
    return (static_cast<long long>(h[24]) << 24) | (h[25] << 16) | (h[26] << 8) | h[27];
  }

  // What an incremental or differential means for a database: whether it
  // changed since the backup whose stamp came back, and how.
  json SincePrevious(const Database& d) const {
    const json& now = d.state;
    auto invalid = [](const std::string& why) { return json{{"valid", false}, {"reason", why}}; };
    if (d.previous_stamp.empty())
      return invalid("no previous stamp: no earlier backup of this database to build on");
    json prev;
    std::string err;
    if (!gnomon::ParseJsonBounded(d.previous_stamp, &prev, &err, 1u << 20)) prev = nullptr;
    if (!prev.is_object() || prev.value("stamp", "") != kStampSchema)
      return invalid("the previous stamp is not a " + std::string(kStampSchema) +
                     " stamp (an older writer's?)");
    try {
      if (prev.at("database") != now.at("database"))
        return invalid("the previous stamp is of another database (" +
                       prev.at("database").get<std::string>() + ")");
      if (prev.at("page_size") != now.at("page_size"))
        return invalid("the page size changed since the previous backup");
      const bool wal = now.at("journal_mode") == "wal" || prev.at("journal_mode") == "wal";
      json out{{"valid", true},
               {"issued_by_this_writer", issued_.count(d.previous_stamp) > 0},
               {"pages_added",
                now.at("page_count").get<long long>() - prev.at("page_count").get<long long>()},
               {"schema_changed", prev.at("schema_version") != now.at("schema_version")}};
      // changed: false only when nothing can have been committed since.
      json changed = nullptr;
      if (prev.at("writer") == now.at("writer"))
        // Our connection's data_version moves whenever another connection
        // commits (or resets the WAL), and this writer never writes.
        changed = prev.at("data_version") != now.at("data_version");
      else if (!wal)
        changed = prev.at("change_counter") != now.at("change_counter");
      if (out["pages_added"] != 0 || out["schema_changed"] == true) changed = true;
      out["changed"] = changed;
      out["write_transactions"] = wal ? json(nullptr)
                                      : json((now.at("change_counter").get<long long>() -
                                              prev.at("change_counter").get<long long>()) &
                                             0xffffffffll);
      return out;
    } catch (const json::exception& e) {
      return invalid(std::string("the previous stamp is incomplete: ") + e.what());
    }
  }

  // Retries every 100 us for up to 10 s: the application releases the lock
  // for only microseconds between its transactions.
  static int PollBusy(void*, int tries) {
    if (tries >= 100000) return 0;
    usleep(100);
    return 1;
  }
  // Runs sql; the first row's columns as text in *row. False, with the
  // writer failure set, if it fails.
  bool Query(Database& d, const std::string& sql, const char* what, std::vector<std::string>* row) {
    if (QuietQuery(d, sql, row)) return true;
    SetWriterFailure(vss::VSS_E_WRITERERROR_RETRYABLE,
                     d.path + ": " + what + ": " + sqlite3_errmsg(d.db));
    return false;
  }
  bool QuietQuery(Database& d, const std::string& sql, std::vector<std::string>* row) {
    row->clear();
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(d.db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return false;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        const unsigned char* t = sqlite3_column_text(st, i);
        row->push_back(t ? reinterpret_cast<const char*>(t) : "");
      }
    while (rc == SQLITE_ROW) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE;
  }
  bool Release() {
    bool ok = true;
    for (auto& d : dbs_)
      if (d.in_txn) {
        ok &= sqlite3_exec(d.db, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
        d.in_txn = false;
      }
    return ok;
  }

  std::vector<Database> dbs_;
  // Names this process's connections in its stamps: data_version compares
  // only within one connection's life.
  const std::string session_ = vss::Guid::Random().ToString();
  std::set<std::string> issued_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon-writer-sqlite: makes SQLite databases consistent in gnomon backups.\n"
      "Checkpoints the WAL before the snapshot and holds each database's write lock\n"
      "while the snapshot is taken. Runs until SIGINT or SIGTERM."};
  app.footer(
      "Backup options (gnomon backup --writer-option NAME:KEY=VALUE; any other key fails\n"
      "the backup):\n"
      "  checkpoint=passive|full|restart|truncate\n"
      "      the WAL checkpoint before the snapshot (default truncate: every committed\n"
      "      page is copied into the database file and the WAL emptied, waiting for\n"
      "      readers; passive waits for nobody, so the image's WAL may hold frames\n"
      "      SQLite replays when the restored database is opened)\n"
      "Backup stamps: each database's state at the snapshot (page count, schema\n"
      "version, change counter, data version). On an incremental or differential the\n"
      "backup metadata says whether the database changed since the stamp handed back\n"
      "(since_previous: changed, pages_added, schema_changed, write_transactions).");
  std::vector<std::string> paths;
  std::string name = "sqlite";
  gnomon::vss::WriterServerOptions opt;
  double freeze_s = 60;
  app.add_option("DB", paths, "SQLite database files (in WAL or rollback mode)")->required();
  app.add_option("--name", name, "Writer name, also its socket's name (default sqlite)");
  app.add_option("--dir", opt.dir,
                 "Writer directory (default: $GNOMON_WRITER_DIR or " +
                     gnomon::vss::proto::DefaultWriterDir() + ")");
  app.add_option("--freeze-timeout", freeze_s, "Seconds the databases may stay locked (default 60)")
      ->check(gnomon::cli::Seconds(1.0, 600.0));
  CLI11_PARSE(app, argc, argv);

  std::vector<Database> dbs;
  for (const auto& p : paths) {
    Database d;
    d.path = p;
    char resolved[PATH_MAX];
    if (realpath(p.c_str(), resolved)) d.path = resolved;
    if (sqlite3_open_v2(d.path.c_str(), &d.db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      fmt::print(stderr, "gnomon-writer-sqlite: {}: {}\n", p,
                 d.db ? sqlite3_errmsg(d.db) : "cannot open");
      return 1;
    }
    dbs.push_back(d);
  }
  auto w = std::make_shared<SqliteWriter>(std::move(dbs));
  // A stable class id: the same writer from one run to the next (stamps are
  // handed back by class id).
  gnomon::vss::Guid cls;
  gnomon::vss::Guid::Parse("5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10", &cls);
  w->Initialize(cls, name, gnomon::vss::UsageType::kUserData,
                gnomon::vss::SourceType::kTransactedDb, gnomon::vss::ApplicationLevel::kBackEnd,
                static_cast<uint32_t>(freeze_s * 1000));
  return gnomon::vss::ServeUntilSignalled(w, opt, "gnomon-writer-sqlite",
                                          std::to_string(paths.size()) + " database(s)");
}
