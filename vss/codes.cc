#include "vss/codes.h"

#include <cstdio>

namespace gnomon::vss {

namespace {
struct Entry {
  HResult hr;
  const char* name;
  const char* text;
};
constexpr Entry kCodes[] = {
    {S_OK_, "S_OK", "success"},
    {S_FALSE_, "S_FALSE", "success, nothing done"},
    {E_FAIL_, "E_FAIL", "unspecified failure"},
    {E_INVALIDARG_, "E_INVALIDARG", "invalid argument"},
    {E_ACCESSDENIED_, "E_ACCESSDENIED", "access denied (needs root)"},
    {E_OUTOFMEMORY_, "E_OUTOFMEMORY", "out of memory"},
    {VSS_E_BAD_STATE, "VSS_E_BAD_STATE", "call not valid in the session's current state"},
    {VSS_E_UNEXPECTED, "VSS_E_UNEXPECTED", "unexpected error"},
    {VSS_E_PROVIDER_NOT_REGISTERED, "VSS_E_PROVIDER_NOT_REGISTERED", "unknown provider"},
    {VSS_E_PROVIDER_VETO, "VSS_E_PROVIDER_VETO", "the provider refused the snapshot"},
    {VSS_E_OBJECT_NOT_FOUND, "VSS_E_OBJECT_NOT_FOUND", "object not found"},
    {VSS_S_ASYNC_PENDING, "VSS_S_ASYNC_PENDING", "operation still running"},
    {VSS_S_ASYNC_FINISHED, "VSS_S_ASYNC_FINISHED", "operation finished"},
    {VSS_S_ASYNC_CANCELLED, "VSS_S_ASYNC_CANCELLED", "operation cancelled"},
    {VSS_E_VOLUME_NOT_SUPPORTED, "VSS_E_VOLUME_NOT_SUPPORTED", "no provider supports the volume"},
    {VSS_E_OBJECT_ALREADY_EXISTS, "VSS_E_OBJECT_ALREADY_EXISTS", "object already exists"},
    {VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER, "VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER",
     "the chosen provider does not support the volume"},
    {VSS_E_UNEXPECTED_PROVIDER_ERROR, "VSS_E_UNEXPECTED_PROVIDER_ERROR", "provider error"},
    {VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED, "VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED",
     "snapshot set is full (64 volumes)"},
    {VSS_E_FLUSH_WRITES_TIMEOUT, "VSS_E_FLUSH_WRITES_TIMEOUT", "flushing writes timed out"},
    {VSS_E_HOLD_WRITES_TIMEOUT, "VSS_E_HOLD_WRITES_TIMEOUT",
     "the provider commit overran the flush-and-hold window"},
    {VSS_E_UNEXPECTED_WRITER_ERROR, "VSS_E_UNEXPECTED_WRITER_ERROR", "a writer failed"},
    {VSS_E_SNAPSHOT_SET_IN_PROGRESS, "VSS_E_SNAPSHOT_SET_IN_PROGRESS",
     "another snapshot set is being created on this system"},
    {VSS_E_WRITER_INFRASTRUCTURE, "VSS_E_WRITER_INFRASTRUCTURE", "writer infrastructure error"},
    {VSS_E_WRITER_NOT_RESPONDING, "VSS_E_WRITER_NOT_RESPONDING", "writer did not respond"},
    {VSS_E_WRITER_ALREADY_SUBSCRIBED, "VSS_E_WRITER_ALREADY_SUBSCRIBED",
     "writer already subscribed"},
    {VSS_E_INSUFFICIENT_STORAGE, "VSS_E_INSUFFICIENT_STORAGE", "not enough space for a snapshot"},
    {VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT, "VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT",
     "writer needs more volumes in the snapshot set"},
    {VSS_E_WRITERERROR_OUTOFRESOURCES, "VSS_E_WRITERERROR_OUTOFRESOURCES",
     "writer ran out of resources (retryable)"},
    {VSS_E_WRITERERROR_TIMEOUT, "VSS_E_WRITERERROR_TIMEOUT", "freeze window exceeded (retryable)"},
    {VSS_E_WRITERERROR_RETRYABLE, "VSS_E_WRITERERROR_RETRYABLE", "writer error (retryable)"},
    {VSS_E_WRITERERROR_NONRETRYABLE, "VSS_E_WRITERERROR_NONRETRYABLE",
     "writer error (not retryable)"},
    {VSS_E_WRITERERROR_RECOVERY_FAILED, "VSS_E_WRITERERROR_RECOVERY_FAILED",
     "writer auto-recovery failed"},
    {VSS_E_WRITER_STATUS_NOT_AVAILABLE, "VSS_E_WRITER_STATUS_NOT_AVAILABLE",
     "writer status not available"},
    {VSS_E_WRITERERROR_PARTIAL_FAILURE, "VSS_E_WRITERERROR_PARTIAL_FAILURE",
     "some components failed"},
};
}  // namespace

std::string HResultName(HResult hr) {
  for (const auto& e : kCodes)
    if (e.hr == hr) return e.name;
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", hr);
  return buf;
}

std::string DescribeHResult(HResult hr) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", hr);
  for (const auto& e : kCodes)
    if (e.hr == hr) return std::string(buf) + " " + e.name + " (" + e.text + ")";
  return buf;
}

}  // namespace gnomon::vss
