// gnomon-writer-postgres: a writer for a PostgreSQL server (15 or later), in
// a process of its own, through the writer library (vss/writer_server.h).
//   PrepareForSnapshot  CHECKPOINT, then pg_backup_start('gnomon', fast) on one
//                    session this writer holds open (a non-exclusive backup)
//   Thaw             pg_backup_stop(false): the backup label and tablespace
//                    map of the snapshot
//   PostSnapshot     both stored as the component's backup metadata (JSON:
//                    label, tablespace_map, start_lsn, stop_lsn), and a stamp
//   Abort            pg_backup_stop, so the server is not left in backup mode
// The data directory is one component (recursive file set), so it is
// included when its volume is backed up. The image is also an atomic,
// crash-consistent copy of the data directory: started as it is, PostgreSQL
// recovers from its own WAL. The label serves a restore with a WAL archive
// (point-in-time recovery): write it to backup_label before starting.
//
// Usage: gnomon-writer-postgres --data-dir DIR [--conninfo STR] [--name NAME]
//                               [--dir DIR] [--freeze-timeout S]
#include <libpq-fe.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "tools/cli_checks.h"

#include "vss/writer_server.h"

namespace {

class PostgresWriter : public gnomon::vss::Writer {
 public:
  PostgresWriter(std::string conninfo, std::string data_dir)
      : conninfo_(std::move(conninfo)), data_dir_(std::move(data_dir)) {}
  ~PostgresWriter() override {
    if (conn_) PQfinish(conn_);
  }

  bool OnIdentify(gnomon::vss::WriterMetadata* md) override {
    gnomon::vss::ComponentInfo c;
    c.type = gnomon::vss::ComponentType::kDatabase;
    c.logical_path = "postgresql";
    c.name = data_dir_;
    c.caption = "PostgreSQL cluster in " + data_dir_;
    gnomon::vss::FileSpec f;
    f.path = data_dir_;
    f.recursive = true;
    c.files.push_back(f);
    md->components.push_back(c);
    return true;
  }

  bool OnPrepareSnapshot() override {
    label_ = tablespace_map_ = start_lsn_ = stop_lsn_ = "";
    if (!Connect()) return false;
    std::vector<std::string> row;
    if (!Query("CHECKPOINT", &row)) return false;
    if (!Query("SELECT pg_backup_start('gnomon', true)", &row)) return false;
    start_lsn_ = row.empty() ? "" : row[0];
    in_backup_ = true;
    return true;
  }
  bool OnFreeze() override { return true; }  // backup mode is the quiescence
  bool OnThaw() override { return Stop(); }
  bool OnAbort() override {
    if (in_backup_) Stop();
    return true;
  }
  bool OnPostSnapshot(gnomon::vss::WriterComponents* comps) override {
    for (auto& c : *comps) {
      c.SetBackupMetadata(nlohmann::json{
          {"label", label_},
          {"tablespace_map", tablespace_map_},
          {"start_lsn", start_lsn_},
          {"stop_lsn",
           stop_lsn_}}.dump());
      c.SetBackupStamp("postgresql start_lsn=" + start_lsn_ + " stop_lsn=" + stop_lsn_);
    }
    return true;
  }
  bool OnBackupShutdown(const gnomon::vss::Guid&) override {
    // The session is needed only from PrepareForSnapshot to Thaw.
    if (conn_ && !in_backup_) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    return true;
  }

 private:
  bool Connect() {
    if (conn_ && PQstatus(conn_) == CONNECTION_OK) return true;
    if (conn_) PQfinish(conn_);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_RETRYABLE,
                       "cannot connect to PostgreSQL: " + std::string(PQerrorMessage(conn_)));
      PQfinish(conn_);
      conn_ = nullptr;
      return false;
    }
    return true;
  }
  // Runs sql; the first row's columns as text in *row.
  bool Query(const char* sql, std::vector<std::string>* row) {
    row->clear();
    PGresult* r = PQexec(conn_, sql);
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      SetWriterFailure(gnomon::vss::VSS_E_WRITERERROR_RETRYABLE,
                       std::string(sql) + ": " + PQresultErrorMessage(r));
      PQclear(r);
      return false;
    }
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0)
      for (int i = 0; i < PQnfields(r); ++i) row->push_back(PQgetvalue(r, 0, i));
    PQclear(r);
    return true;
  }
  bool Stop() {
    if (!in_backup_) return true;
    in_backup_ = false;
    std::vector<std::string> row;
    if (!Query("SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(false)", &row)) return false;
    if (row.size() == 3) {
      stop_lsn_ = row[0];
      label_ = row[1];
      tablespace_map_ = row[2];
    }
    return true;
  }

  std::string conninfo_, data_dir_;
  PGconn* conn_ = nullptr;
  bool in_backup_ = false;
  std::string label_, tablespace_map_, start_lsn_, stop_lsn_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon-writer-postgres: takes part in gnomon backups for a PostgreSQL server:\n"
      "a checkpoint and pg_backup_start before the snapshot, pg_backup_stop after it,\n"
      "the backup label stored with the backup. Runs until SIGINT or SIGTERM."};
  std::string conninfo = "dbname=postgres", data_dir, name = "postgresql";
  gnomon::vss::WriterServerOptions opt;
  double freeze_s = 60;
  app.add_option("--data-dir", data_dir, "The cluster's data directory")->required();
  app.add_option("--conninfo", conninfo,
                 "libpq connection string of a superuser or a role allowed pg_backup_start "
                 "(default: dbname=postgres)");
  app.add_option("--name", name, "Writer name, also its socket's name (default postgresql)");
  app.add_option("--dir", opt.dir,
                 "Writer directory (default: $GNOMON_WRITER_DIR or " +
                     gnomon::vss::proto::DefaultWriterDir() + ")");
  app.add_option("--freeze-timeout", freeze_s, "Seconds of the freeze window (default 60)")
      ->check(gnomon::cli::Seconds(1.0, 600.0));
  CLI11_PARSE(app, argc, argv);
  char resolved[PATH_MAX];
  if (realpath(data_dir.c_str(), resolved)) data_dir = resolved;

  auto w = std::make_shared<PostgresWriter>(conninfo, data_dir);
  gnomon::vss::Guid cls;
  gnomon::vss::Guid::Parse("a3d6f1c8-2b47-4e91-8c0d-5e2f7b9a4c61", &cls);
  w->Initialize(cls, name, gnomon::vss::UsageType::kUserData,
                gnomon::vss::SourceType::kTransactedDb, gnomon::vss::ApplicationLevel::kBackEnd,
                static_cast<uint32_t>(freeze_s * 1000));
  return gnomon::vss::ServeUntilSignalled(w, opt, "gnomon-writer-postgres", data_dir);
}
