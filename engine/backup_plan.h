// The arithmetic of an incremental's plan, without I/O: which backup a
// volume builds on, the stamp it left, and which 4 KiB blocks of a slot
// changed. Pure functions, unit-tested without root, loop devices or
// reflinks (tests/backup_plan_test.cc); engine/backup_job.cc does the I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "format/backup_record.h"
#include "format/patch.h"
#include "vss/types.h"

namespace gnomon {

// The parent of a new backup of volume `key`: the newest full, or (unless
// full_only) the newest full or incremental, that holds the volume. A copy
// backup is never a parent. history: oldest first. Both null if none.
struct ParentChoice {
  const BackupRecord* record = nullptr;
  const VolumeRecord* volume = nullptr;
};
ParentChoice ChooseParent(const std::vector<BackupRecord>& history, const std::string& key,
                          bool full_only);
// The same for a source: the newest such backup holding the source `key`
// as one volume or as a disk (volumes keyed `key#...`, FORMAT.md §7b).
// Its volume is the first of them; each volume of a new backup pairs only
// with the parent's volume of exactly its own key.
ParentChoice ChooseSourceParent(const std::vector<BackupRecord>& history, const std::string& key,
                                bool full_only);

// The backup stamp that component (class_id, name) of a record's BCD holds,
// or "" when the record has none (or its documents have another shape).
std::string StoredStamp(const BackupRecord& r, const std::string& class_id,
                        const std::string& name);

// A backup stamp a record's BCD holds for one component (FORMAT.md §7),
// keyed as VSS keys stored stamps: by writer class, logical path and
// component name, never by instance.
struct ComponentStamp {
  std::string class_id, logical_path, name, stamp;
  std::string backup_id;  // the record it was stored in
};
// Every non-empty stamp of a record's BCD; none when its documents have
// another shape (a component of another shape is skipped).
std::vector<ComponentStamp> StoredStamps(const BackupRecord& r);
// The stamps the next incremental or differential hands back with
// SetPreviousBackupStamp: those of its parents (the records its volumes
// build on), a component's from the newest parent that holds it. Stamps of
// writer class skip_class are left out (the Volume Image Writer's go back
// per volume, by volume key, since its component names the volume's path,
// which may change while the volume stays the same).
std::vector<ComponentStamp> ParentStamps(std::vector<const BackupRecord*> parents,
                                         const std::string& skip_class);

// Ranges as a provider reported them (any order, overlapping, possibly
// past the end), made sorted, merged and clipped to [offset, offset + size).
std::vector<vss::ByteRange> NormalizeRanges(std::vector<vss::ByteRange> ranges, uint64_t offset,
                                            uint64_t size);

// The parts of `changed` (sorted, merged byte ranges of the volume) that
// fall in the slot [start, start + len): widened to whole 4 KiB blocks,
// clipped to the slot, merged, and relative to start. *next is a cursor
// into `changed` that only moves forward, so slots must come in order.
// Returns the bytes they cover.
uint64_t SlotChangedBlocks(const std::vector<vss::ByteRange>& changed, uint64_t start, uint32_t len,
                           size_t* next, std::vector<PatchRange>* out);

// The 4 KiB blocks (the last may be short) in which `now` differs from
// `old`, which have the same length, merged. Returns the bytes they cover.
uint64_t DifferingBlocks(std::span<const uint8_t> old, std::span<const uint8_t> now,
                         std::vector<PatchRange>* out);

}  // namespace gnomon
