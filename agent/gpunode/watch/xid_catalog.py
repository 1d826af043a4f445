"""What NVIDIA says to do about each Xid, as data: the "Resolution Bucket (Immediate Action)"
column of NVIDIA's Xid catalog for Ampere and newer GPUs
(https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, the catalog spreadsheet
as published in 2025), and the class of action gpunode watch takes for each bucket.

The Xid names stay in checks.xid.DESCRIPTIONS (one table of names, shared with the gate's
summaries); this module adds only NVIDIA's bucket per Xid and the class it maps to.
Codes NVIDIA lists as "Unused" carry its CONTACT_SUPPORT bucket; codes the catalog leaves
without a bucket (162-172 at the time of writing) and codes it does not list are recorded only
(the polled gate checks still judge the node).
"""

from __future__ import annotations

# The classes of action (watch.policy acts by these).
RESTART_APP = "restart-app"   # the user's program failed; the GPU is fine: record, attribute to the job
RESET = "reset"               # drain, reset the GPU when idle (where the site allows), verify, resume
REBOOT = "reboot"             # scontrol reboot ASAP nextstate=RESUME
CONTACT_SUPPORT = "contact-support"  # stay drained, write an evidence bundle
IGNORE = "ignore"             # informational: record only
CLASSES = (RESTART_APP, RESET, REBOOT, CONTACT_SUPPORT, IGNORE)

# NVIDIA's immediate-action bucket per Xid (the spreadsheet's words, verbatim).
IMMEDIATE = {
    8: "RESTART_APP", 11: "RESTART_APP", 13: "RESTART_APP", 14: "IGNORE", 25: "RESTART_APP",
    31: "RESTART_APP", 32: "RESTART_APP", 37: "IGNORE", 38: "IGNORE", 39: "RESTART_APP",
    40: "RESTART_APP", 41: "RESTART_APP", 43: "IGNORE", 44: "IGNORE", 45: "WORKFLOW_XID_45",
    46: "RESET_GPU", 48: "WORKFLOW_XID_48", 54: "CHECK_MECHANICALS", 60: "RESTART_APP",
    62: "RESET_GPU", 63: "IGNORE", 64: "RESET_GPU", 66: "IGNORE", 67: "IGNORE", 68: "RESTART_APP",
    69: "RESTART_APP", 70: "RESTART_APP", 71: "RESTART_APP", 72: "RESTART_APP",
    74: "WORKFLOW_NVLINK_ERR", 75: "RESTART_APP", 76: "RESTART_APP", 77: "RESTART_APP",
    78: "UPDATE_SWFW", 79: "RESTART_BM", 80: "RESTART_APP", 82: "RESTART_APP", 83: "RESTART_APP",
    84: "RESTART_APP", 85: "RESTART_APP", 86: "RESTART_APP", 88: "RESTART_APP", 89: "RESTART_APP",
    92: "IGNORE", 93: "IGNORE", 94: "RESTART_APP", 95: "RESET_GPU", 96: "RESTART_APP",
    97: "RESTART_APP", 98: "RESTART_APP", 99: "RESTART_APP", 100: "RESTART_APP",
    101: "RESTART_APP", 102: "RESTART_APP", 103: "RESTART_APP", 104: "RESTART_APP",
    105: "RESTART_APP", 106: "IGNORE", 107: "IGNORE", 108: "IGNORE", 109: "RESET_GPU", 110: "RESET_GPU",
    119: "RESET_GPU", 120: "RESET_GPU", 121: "IGNORE", 126: "RESTART_APP", 127: "RESTART_APP",
    128: "RESTART_APP", 129: "RESTART_APP", 130: "RESTART_APP", 131: "RESTART_APP",
    132: "RESTART_APP", 133: "RESTART_APP", 134: "RESTART_APP", 135: "RESTART_APP",
    136: "RESET_GPU", 137: "IGNORE", 139: "RESTART_APP", 140: "RESET_GPU", 141: "IGNORE",
    142: "CONTACT_SUPPORT", 143: "RESET_GPU", 144: "WORKFLOW_NVLINK5_ERR",
    145: "WORKFLOW_NVLINK5_ERR", 146: "WORKFLOW_NVLINK5_ERR", 147: "WORKFLOW_NVLINK5_ERR",
    148: "WORKFLOW_NVLINK5_ERR", 149: "WORKFLOW_NVLINK5_ERR", 150: "WORKFLOW_NVLINK5_ERR",
    151: "RESTART_VM", 152: "IGNORE", 153: "IGNORE", 154: "XID_154", 155: "RESET_GPU",
    156: "RESET_GPU", 157: "IGNORE", 158: "RESET_GPU", 159: "CHECK_UVM", 160: "IGNORE",
    161: "IGNORE",
}
# Listed as "Unused" on Ampere and newer, with the bucket CONTACT_SUPPORT.
UNUSED = frozenset({*range(1, 8), 9, 10, 12, *range(15, 25), *range(26, 31), *range(33, 37), 42, 47,
                    *range(49, 54), *range(55, 60), 61, 65, 73, 81, 87, 90, 91, *range(111, 119),
                    *range(122, 126), 138})

# Bucket -> class. The workflows, decided here (each needs the GPU back in a known state):
# WORKFLOW_XID_45 (preemptive cleanup after another error: that other Xid drives the action),
# WORKFLOW_XID_48 (a DBE: reset to retire/remap the row; NVIDIA's health validation lists
# "drain: reset_gpu -> service_required" for Xid 48), WORKFLOW_NVLINK_ERR / _NVLINK5_ERR (the
# decode table's fatal rows need a GPU reset; undecoded, take the safe side).
BUCKET_CLASS = {
    "RESTART_APP": RESTART_APP, "CHECK_UVM": RESTART_APP, "WORKFLOW_XID_45": RESTART_APP,
    "IGNORE": IGNORE,
    "RESET_GPU": RESET, "WORKFLOW_XID_48": RESET, "WORKFLOW_NVLINK_ERR": RESET, "WORKFLOW_NVLINK5_ERR": RESET,
    "RESTART_BM": REBOOT, "RESTART_VM": REBOOT,
    "CONTACT_SUPPORT": CONTACT_SUPPORT, "CHECK_MECHANICALS": CONTACT_SUPPORT, "UPDATE_SWFW": CONTACT_SUPPORT,
}

# Xid 154 names the recovery action the driver wants (host.gpu.model.RECOVERY_ACTIONS codes).
RECOVERY_CLASS = {0: IGNORE, 1: RESET, 2: REBOOT, 3: RESET, 4: RESET, 6: REBOOT, 7: REBOOT}


def bucket(xid: int) -> str | None:
    """NVIDIA's immediate-action bucket for this Xid, None when the catalog gives none."""
    if xid in UNUSED:
        return "CONTACT_SUPPORT"
    return IMMEDIATE.get(xid)


def xid_class(xid: int, recovery: int | None = None) -> str:
    """The class of action for an Xid. `recovery`: for Xid 154, the recovery action it changed
    to (checks.xid.recovery_target); unreadable -> contact-support (the driver asked for
    something we cannot tell)."""
    if xid == 154:
        return CONTACT_SUPPORT if recovery is None else RECOVERY_CLASS.get(recovery, CONTACT_SUPPORT)
    found = bucket(xid)
    return BUCKET_CLASS.get(found, IGNORE) if found else IGNORE


def recovery_class(code: int | None) -> str:
    """NVML's GPU recovery action (the event, not an Xid) -> class."""
    if code is None:
        return IGNORE
    return RECOVERY_CLASS.get(code, CONTACT_SUPPORT)
