// A backup record: what one `gnomon backup` produced. Published last, by
// atomic rename, only once every pack, index file and volume index it names is
// durable, so a record that exists always restores. See FORMAT.md, "Backup records".
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "format/disk_layout.h"
#include "format/framed_file.h"

namespace gnomon {

// VolumeRecord::tracking of a volume read whole (every chunk hashed).
inline constexpr const char* kTrackingFullRead = "full-read";

struct VolumeStats {
  uint64_t bytes = 0;             // volume bytes covered (read or known zero)
  uint64_t bytes_read = 0;        // bytes actually read from the source
  uint64_t chunks = 0;            // slots in the volume index
  uint64_t zero_chunks = 0;       // all-zero slots (stored nowhere)
  uint64_t dup_chunks = 0;        // already in the repository or earlier in this run
  uint64_t new_chunks = 0;        // stored by this backup
  uint64_t new_raw_bytes = 0;     // uncompressed size of the new chunks
  uint64_t new_stored_bytes = 0;  // their size in packs
  // Incrementals (record version 2): slots whose content differs from the
  // parent's, and slots change tracking proved unchanged (never read).
  uint64_t changed_chunks = 0;
  uint64_t unchanged_chunks = 0;
  uint64_t patched_chunks = 0;  // new chunks stored as patches on the parent's
  // Record version 3: bytes the used-block map marked free (never read,
  // restored as zeros).
  uint64_t unused_bytes = 0;
  // Format version 16: new chunks by the zstd level they were stored at
  // (0: stored raw), as adaptive compression chose it.
  std::map<int, uint64_t> levels;
  double seconds = 0;

  void Add(const VolumeStats& o);
  nlohmann::json ToJson() const;  // as stored in backup records
};

struct VolumeRecord {
  std::string name;    // short name, unique within the backup ("loop0", "disk.img")
  std::string source;  // the path that was backed up
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  std::string index;            // volume index path, relative to the repository
  uint64_t index_checksum = 0;  // Checksum64 of the whole volume index file
  VolumeStats stats;
  // Record version 2:
  std::string key;     // stable identity of the volume (backing file, device)
  std::string parent;  // backup whose volume index this one was built on, or ""
  // How unchanged chunks were found: "full-read" (everything read; new
  // chunks found by digest), "reflink-fiemap" (only changed chunks read).
  // kTrackingFullRead, or the change tracker that said what changed
  // (vss/contracts.h ChangeTracker names: "reflink-fiemap", "range-log").
  std::string tracking = kTrackingFullRead;
  std::string tracking_reason;  // why change tracking was not used, or ""
  // Record version 3: which used-block map chose the bytes read: "ext4"
  // (free blocks stored as zeros) or "all" (every byte imaged), and why
  // "all" when it was not asked for.
  std::string block_map = "all";
  std::string block_map_reason;
};

struct BackupRecord {
  std::string id;    // 16 hex characters
  std::string time;  // RFC 3339, UTC
  std::string host;
  std::string type = "full";  // full | incremental | differential | copy
  std::string parent;         // id of the backup this one was based on, or ""
  std::vector<std::string> tags;
  std::vector<VolumeRecord> volumes;
  VolumeStats totals;
  std::string index_file;  // chunk index file written by this backup, or ""
  // Room for what later layers add (VSS documents, stamps) without a format
  // change: an object the reader keeps but need not understand.
  nlohmann::json extra = nlohmann::json::object();
  // Record version 4: a disk backup (one disk, its partitions as volumes).
  DiskLayout disk;

  std::string Encode() const;
  // The oldest record version that holds everything this record says: 4 for
  // a disk backup, else 3, so older readers still read volume backups.
  uint32_t Version() const { return disk.present() ? 4 : 3; }
  static Status Decode(const std::string& path, const std::string& body, BackupRecord* out);
};

// The newest record version this code reads and writes.
inline constexpr uint32_t kBackupRecordVersion = kBackupFrame.max_version;

}  // namespace gnomon
