// gnomon-writer-sqlite: a writer for SQLite databases, in a process of its
// own, through the writer library (vss/writer_server.h). Run it beside the
// application; every gnomon backup of the volume the databases live on then
// makes them consistent:
//   PrepareForSnapshot  PRAGMA wal_checkpoint(TRUNCATE): the committed pages go
//                    into the database file, so the image needs no WAL replay
//                    then BEGIN IMMEDIATE: takes the write lock, held through
//                    Freeze until Thaw, so no transaction commits while the
//                    snapshot is taken (readers go on)
//   Thaw, Abort      ROLLBACK: writers go on
// The lock is taken in PrepareForSnapshot, not Freeze, because SQLite's lock
// is not fair: an application that commits in a tight loop takes it back
// within microseconds, and a Freeze must not spend its window waiting. In
// PrepareForSnapshot the writer may wait (polling every 100 us, up to 10 s),
// and Freeze then holds it at once.
//   PostSnapshot     a backup stamp per database (its schema version, page
//                    count and size at the snapshot)
// Each database is one component holding its file, its -wal and its -shm.
//
// Usage: gnomon-writer-sqlite [--name NAME] [--dir DIR] [--freeze-timeout S] DB...
#include <sqlite3.h>
#include <unistd.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>
#include "tools/cli_checks.h"

#include "vss/writer_server.h"

namespace {

struct Database {
  std::string path;
  sqlite3* db = nullptr;
  bool in_txn = false;
};

std::string Dir(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "." : (s == 0 ? "/" : p.substr(0, s));
}
std::string Base(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

class SqliteWriter : public gnomon::vss::Writer {
 public:
  explicit SqliteWriter(std::vector<Database> dbs) : dbs_(std::move(dbs)) {}
  ~SqliteWriter() override {
    for (auto& d : dbs_) sqlite3_close(d.db);
  }

  bool OnIdentify(gnomon::vss::WriterMetadata* md) override {
    for (const auto& d : dbs_) {
      gnomon::vss::ComponentInfo c;
      c.type = gnomon::vss::ComponentType::kDatabase;
      c.logical_path = "sqlite";
      c.name = d.path;
      c.caption = "SQLite database " + Base(d.path);
      for (const char* suffix : {"", "-wal", "-shm"}) {
        gnomon::vss::FileSpec f;
        f.path = Dir(d.path);
        f.spec = Base(d.path) + suffix;
        f.is_log = std::string(suffix) == "-wal";
        c.files.push_back(f);
      }
      md->components.push_back(c);
    }
    return true;
  }

  bool OnPrepareSnapshot() override {
    for (auto& d : dbs_) {
      // Busy readers can stop a TRUNCATE checkpoint short; that is not an
      // error, only a longer WAL in the image.
      sqlite3_busy_timeout(d.db, 10000);
      if (!Exec(d, "PRAGMA wal_checkpoint(TRUNCATE)", "checkpointing")) return false;
    }
    for (auto& d : dbs_) {
      sqlite3_busy_handler(d.db, PollBusy, nullptr);
      const bool ok = Exec(d, "BEGIN IMMEDIATE", "taking the write lock");
      sqlite3_busy_timeout(d.db, 10000);
      if (!ok) {
        Release();
        return false;
      }
      d.in_txn = true;
    }
    return true;
  }

  bool OnFreeze() override { return true; }  // the write locks are held
  bool OnThaw() override { return Release(); }
  bool OnAbort() override { return Release(); }

  bool OnPostSnapshot(gnomon::vss::WriterComponents* comps) override {
    for (auto& c : *comps) {
      for (auto& d : dbs_) {
        if (d.path != c.name()) continue;
        c.SetBackupStamp("sqlite schema_version=" + Pragma(d, "schema_version") + " page_count=" +
                         Pragma(d, "page_count") + " page_size=" + Pragma(d, "page_size"));
      }
    }
    return true;
  }

 private:
  // Retries every 100 us for up to 10 s: the application releases the lock
  // for only microseconds between its transactions.
  static int PollBusy(void*, int tries) {
    if (tries >= 100000) return 0;
    usleep(100);
    return 1;
  }
  bool Exec(Database& d, const char* sql, const char* what) {
    char* err = nullptr;
    if (sqlite3_exec(d.db, sql, nullptr, nullptr, &err) == SQLITE_OK) return true;
    std::string msg = d.path + ": " + what + ": " + (err ? err : sqlite3_errmsg(d.db));
    sqlite3_free(err);
    SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_RETRYABLE, msg);
    return false;
  }
  std::string Pragma(Database& d, const char* name) {
    std::string out;
    sqlite3_stmt* st = nullptr;
    std::string sql = std::string("PRAGMA ") + name;
    if (sqlite3_prepare_v2(d.db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
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
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon-writer-sqlite: makes SQLite databases consistent in gnomon backups.\n"
      "Checkpoints the WAL before the snapshot and holds each database's write lock\n"
      "while the snapshot is taken. Runs until SIGINT or SIGTERM."};
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
  // A stable class id: the same writer from one run to the next.
  gnomon::vss::Guid cls;
  gnomon::vss::Guid::Parse("5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10", &cls);
  w->Initialize(cls, name, gnomon::vss::UsageType::kUserData,
                gnomon::vss::SourceType::kTransactedDb, gnomon::vss::ApplicationLevel::kBackEnd,
                static_cast<uint32_t>(freeze_s * 1000));
  return gnomon::vss::ServeUntilSignalled(w, opt, "gnomon-writer-sqlite",
                                          std::to_string(paths.size()) + " database(s)");
}
