"""Routing rules per event type, as data: who receives it, at what default priority, which
SNS topic category it belongs to, and whether it is folded into digests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RecipientRule = Literal[
    "event_user", "uploader_and_admins", "course_bookings", "tenant_admins", "all_active"
]
RECIPIENT_RULES: dict[RecipientRule, str] = {
    "event_user": "the person of `metadata.userId`",
    "uploader_and_admins": "the uploader (`data.uploadedBy`) and the tenant's admins",
    "course_bookings": "every confirmed booking of `data.courseId`",
    "tenant_admins": "the tenant's admins",
    "all_active": "every active user of the tenant",
}


@dataclass(frozen=True)
class Route:
    recipients: RecipientRule
    priority: str
    category: str
    batch: bool = False
    topic: bool = True


ROUTES: dict[str, Route] = {
    "file.uploaded": Route("event_user", "low", "FileProcessing", batch=True),
    "file.processed": Route("event_user", "medium", "FileProcessing"),
    "file.virus_detected": Route("uploader_and_admins", "critical", "FileProcessing"),
    "member.registered": Route("event_user", "medium", "MemberActivity"),
    "member.checked_in": Route("event_user", "low", "MemberActivity", batch=True),
    "member.membership_expiring": Route("event_user", "medium", "MemberActivity"),
    "course.booking_confirmed": Route("event_user", "medium", "CourseManagement"),
    "course.cancelled": Route("course_bookings", "high", "CourseManagement"),
    "course.reminder": Route("event_user", "medium", "CourseManagement"),
    "payment.success": Route("event_user", "medium", "PaymentUpdates"),
    "payment.failed": Route("event_user", "high", "PaymentUpdates"),
    "invoice.generated": Route("event_user", "medium", "PaymentUpdates"),
    "system.backup_completed": Route("tenant_admins", "low", "SystemAlerts"),
    "system.maintenance": Route("all_active", "high", "SystemAlerts"),
}

# Who counts as a tenant admin, and who may be reached on the tenant's Slack webhook.
ADMIN_ROLES = ("admin",)
STAFF_ROLES = ("admin", "staff")
