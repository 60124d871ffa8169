// A gnomon repository on disk: the directory layout, the lock, and typed
// access to every file kind. Everything goes through an Env. See FORMAT.md.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/backup_record.h"
#include "format/chunk_index.h"
#include "format/config.h"
#include "format/env.h"
#include "format/pack.h"
#include "format/volume_index.h"

namespace gnomon {

enum class LockMode { kNone, kShared, kExclusive };

class Repository {
 public:
  // Creates the layout at path. Refuses a path that already holds anything
  // but an empty directory, so an existing repository is never overwritten.
  static Status Init(Env* env, const std::string& path, RepoConfig config);
  // `purpose` (e.g. "backup") goes into the lock file for the next person.
  static Status Open(Env* env, const std::string& path, LockMode mode, const std::string& purpose,
                     std::unique_ptr<Repository>* out);

  const RepoConfig& config() const { return config_; }
  const std::string& path() const { return path_; }
  Env* env() const { return env_; }
  // Text of a stale exclusive lock that Open broke (holder died), else "".
  const std::string& broken_stale_lock() const { return stale_lock_; }

  // Chunk index: every index file, merged. Errors name the bad file.
  Status LoadChunkIndex(ChunkIndex* index, std::vector<std::string>* index_files = nullptr);
  Status ListIndexFiles(std::vector<std::string>* names);
  Status ReadIndexFile(const std::string& name, std::vector<PackSummary>* packs);
  // Writes an index file for packs; *name is its file name under index/.
  Status WriteIndexFile(const std::vector<PackSummary>& packs, std::string* name);

  // Packs.
  Status NewPackWriter(std::unique_ptr<PackWriter>* out);
  Status ListPacks(std::vector<std::string>* ids);
  std::string PackPath(const std::string& id) const;
  Status OpenPack(const std::string& id, std::shared_ptr<RandomAccessFile>* out);
  // Reads, decodes and verifies one chunk against its digest into out
  // (which must hold loc.raw_len bytes).
  Status ReadChunk(const ChunkIndex& index, const Digest& d, uint8_t* out, ChunkDecompressor* dec);
  // Reads the content of a volume slot of slot_len bytes: zeros for the zero
  // digest, a whole chunk, or a patch applied to its base chain. Every blob
  // read is checked against its digest; a chain must descend in depth.
  Status ReadSlot(const ChunkIndex& index, const Digest& d, uint8_t* out, uint32_t slot_len,
                  ChunkDecompressor* dec);

  // Volume indexes.
  Status WriteVolumeIndex(const std::string& rel_path, const VolumeIndex& vi, uint64_t* checksum);
  Status ReadVolumeIndex(const VolumeRecord& v, VolumeIndex* vi);

  // Backup records.
  Status WriteBackupRecord(const BackupRecord& r);
  // All readable records, oldest first; unreadable ones are reported in errors.
  Status ListBackups(std::vector<BackupRecord>* out, std::vector<Status>* errors);
  // Removes a backup: its record, then its volume indexes. Chunks stay (the
  // garbage collection of a later prune removes those no backup uses).
  // Every other backup still restores: each has a complete volume index.
  Status ForgetBackup(const BackupRecord& r);
  // spec: a full id, a unique id prefix, or "latest".
  Status FindBackup(const std::string& spec, BackupRecord* out);

  // Removes temporary files left by a process that died (exclusive lock only).
  void RemoveStaleTemporaries();

 private:
  Repository(Env* env, std::string path) : env_(env), path_(std::move(path)) {}
  std::string P(const std::string& rel) const { return JoinPath(path_, rel); }

  Env* env_;
  std::string path_;
  RepoConfig config_;
  std::unique_ptr<FileLock> lock_;
  std::string stale_lock_;
  std::mutex pack_cache_mu_;
  std::unordered_map<std::string, std::shared_ptr<RandomAccessFile>> pack_cache_;
};

std::string HostName();

}  // namespace gnomon
