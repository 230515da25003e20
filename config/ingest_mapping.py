"""How an EventBridge event becomes one of our events, as data (`notifier ingest sqs`).

An EventBridge event is matched on (`source`, `detail-type`); the defaults are the Kyo gym
SaaS's `kyo.*` sources and detail types (the seed's event rules: kyo.files, kyo.members,
kyo.courses, kyo.payments, kyo.system / kyo.security). A detail type that already names one
of our event types (e.g. "payment.success") maps to itself from any source.

NOTIFIER_INGEST_MAPPING_FILE may name a JSON file `{"<source>": {"<detail-type>":
"<eventType>"}}` whose entries are added to (or override) these defaults.

The detail becomes the event like this:

    detail.tenantId                 -> tenantId (required)
    detail.data (an object)         -> data; without it, the rest of the detail is the data
    detail.metadata (an object)     -> metadata; detail.userId / priority / channels fill
                                       its gaps (the seed's rules match on detail.priority)
    detail.eventId, else `id`       -> eventId (the producer's key survives a re-put)
    `time`, `source`                -> timestamp, source
"""

from __future__ import annotations

EVENTBRIDGE_EVENT_TYPES: dict[str, dict[str, str]] = {
    "kyo.files": {
        "File Uploaded": "file.uploaded",
        "File Processed": "file.processed",
        "File Virus Detected": "file.virus_detected",
    },
    "kyo.security": {
        "File Virus Detected": "file.virus_detected",
    },
    "kyo.members": {
        "Member Registered": "member.registered",
        "Member Checked In": "member.checked_in",
        "Membership Expiring": "member.membership_expiring",
    },
    "kyo.courses": {
        "Course Booking Confirmed": "course.booking_confirmed",
        "Course Cancelled": "course.cancelled",
        "Course Reminder": "course.reminder",
    },
    "kyo.payments": {
        "Payment Success": "payment.success",
        "Payment Failed": "payment.failed",
        "Invoice Generated": "invoice.generated",
    },
    "kyo.system": {
        "Backup Completed": "system.backup_completed",
        "System Backup Completed": "system.backup_completed",
        "System Maintenance": "system.maintenance",
    },
}

# Detail keys that describe the event rather than being part of its data.
ENVELOPE_KEYS = frozenset({"tenantId", "eventId", "metadata", "userId", "priority", "channels"})
# Detail keys lifted into metadata when metadata does not already set them.
METADATA_KEYS = ("userId", "priority", "channels")
