// VSS result codes (HRESULTs) and their names, with the values of the Windows
// SDK's vsserror.h, so logs and `gnomon writers` show codes VSS users know.
#pragma once

#include <cstdint>
#include <string>

namespace gnomon::vss {

using HResult = uint32_t;

inline constexpr HResult S_OK_ = 0x00000000;
inline constexpr HResult S_FALSE_ = 0x00000001;
inline constexpr HResult E_FAIL_ = 0x80004005;
inline constexpr HResult E_INVALIDARG_ = 0x80070057;
inline constexpr HResult E_ACCESSDENIED_ = 0x80070005;
inline constexpr HResult E_OUTOFMEMORY_ = 0x8007000E;

inline constexpr HResult VSS_E_BAD_STATE = 0x80042301;
inline constexpr HResult VSS_E_UNEXPECTED = 0x80042302;
inline constexpr HResult VSS_E_PROVIDER_NOT_REGISTERED = 0x80042304;
inline constexpr HResult VSS_E_PROVIDER_VETO = 0x80042306;
inline constexpr HResult VSS_E_OBJECT_NOT_FOUND = 0x80042308;
inline constexpr HResult VSS_S_ASYNC_PENDING = 0x00042309;
inline constexpr HResult VSS_S_ASYNC_FINISHED = 0x0004230A;
inline constexpr HResult VSS_S_ASYNC_CANCELLED = 0x0004230B;
inline constexpr HResult VSS_E_VOLUME_NOT_SUPPORTED = 0x8004230C;
inline constexpr HResult VSS_E_OBJECT_ALREADY_EXISTS = 0x8004230D;
inline constexpr HResult VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER = 0x8004230E;
inline constexpr HResult VSS_E_UNEXPECTED_PROVIDER_ERROR = 0x8004230F;
inline constexpr HResult VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED = 0x80042312;
inline constexpr HResult VSS_E_FLUSH_WRITES_TIMEOUT = 0x80042313;
inline constexpr HResult VSS_E_HOLD_WRITES_TIMEOUT = 0x80042314;
inline constexpr HResult VSS_E_UNEXPECTED_WRITER_ERROR = 0x80042315;
inline constexpr HResult VSS_E_SNAPSHOT_SET_IN_PROGRESS = 0x80042316;
inline constexpr HResult VSS_E_WRITER_INFRASTRUCTURE = 0x80042318;
inline constexpr HResult VSS_E_WRITER_NOT_RESPONDING = 0x80042319;
inline constexpr HResult VSS_E_WRITER_ALREADY_SUBSCRIBED = 0x8004231A;
inline constexpr HResult VSS_E_INSUFFICIENT_STORAGE = 0x8004231F;
inline constexpr HResult VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT = 0x800423F0;
inline constexpr HResult VSS_E_WRITERERROR_OUTOFRESOURCES = 0x800423F1;
inline constexpr HResult VSS_E_WRITERERROR_TIMEOUT = 0x800423F2;
inline constexpr HResult VSS_E_WRITERERROR_RETRYABLE = 0x800423F3;
inline constexpr HResult VSS_E_WRITERERROR_NONRETRYABLE = 0x800423F4;
inline constexpr HResult VSS_E_WRITERERROR_RECOVERY_FAILED = 0x800423F5;
inline constexpr HResult VSS_E_WRITER_STATUS_NOT_AVAILABLE = 0x80042409;
inline constexpr HResult VSS_E_WRITERERROR_PARTIAL_FAILURE = 0x80042336;

inline bool Failed(HResult hr) { return (hr & 0x80000000u) != 0; }
inline bool Succeeded(HResult hr) { return !Failed(hr); }

// "VSS_E_BAD_STATE", or "0x8004dead" for a code without a name.
std::string HResultName(HResult hr);
// "0x80042301 VSS_E_BAD_STATE: ..." short explanation for messages.
std::string DescribeHResult(HResult hr);

}  // namespace gnomon::vss
