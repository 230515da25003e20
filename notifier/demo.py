"""The demo tenant and one event of every type, for `notifier demo` and `notifier dev`."""

from __future__ import annotations

import datetime as dt
from typing import Any

TENANT = "kyo-demo"
PUSH_KEYS = {
    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVl"
    "Uls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "auth": "tBHItJI5svbpez7KI4CCXg",
}


def directory(now: dt.datetime) -> dict[str, Any]:
    today = now.date()
    course_start = (now + dt.timedelta(days=1)).replace(hour=11, minute=0, second=0, microsecond=0)
    return {
        "tenants": [
            {
                "id": TENANT,
                "name": "Kyo Gym Demo",
                "timezone": "Asia/Taipei",
                "locale": "zh-TW",
                "branding": {"color": "#1DBF73"},
            }
        ],
        "users": [
            {
                "id": "admin-1",
                "tenantId": TENANT,
                "name": "Lin Admin",
                "role": "admin",
                "email": "admin@kyo-demo.example",
                "locale": "en",
                "preferences": {
                    "priority": {"high": ["email"], "medium": ["email"], "low": ["email"]}
                },
            },
            {
                "id": "u-amy",
                "tenantId": TENANT,
                "name": "Amy Chen",
                "role": "member",
                "email": "amy@example.com",
                "phone": "+886912345678",
                "lineUserId": "U4af4980629aaaaaaaaaaaaaaaaaaaaaa",
                "locale": "en",
                "webPushSubscriptions": [
                    {"endpoint": "https://fcm.googleapis.com/fcm/send/demo-amy", "keys": PUSH_KEYS}
                ],
                "preferences": {
                    "channels": {"line": True, "email": True, "sms": True, "webPush": True},
                    "priority": {
                        "high": ["line", "sms"],
                        "medium": ["line", "email"],
                        "low": ["web_push"],
                    },
                },
            },
            {
                "id": "u-bo",
                "tenantId": TENANT,
                "name": "王小博",
                "role": "member",
                "email": "bo@example.com",
                "lineUserId": "U4af4980629bbbbbbbbbbbbbbbbbbbbbb",
                "locale": "zh-TW",
                "preferences": {
                    "channels": {"line": True, "email": True, "sms": False, "webPush": True},
                    "priority": {"high": ["line", "email"], "medium": ["line"], "low": ["line"]},
                },
            },
        ],
        "memberships": [
            {
                "id": "m-amy",
                "tenantId": TENANT,
                "userId": "u-amy",
                "membershipType": "Gold",
                "expiresAt": (today + dt.timedelta(days=7)).isoformat(),
            }
        ],
        "courses": [
            {
                "id": "c-yoga",
                "tenantId": TENANT,
                "courseName": "Morning Yoga",
                "instructorName": "Lin",
                "startTime": course_start.isoformat(),
                "location": "Room A",
                "capacity": 20,
            }
        ],
        "bookings": [
            {"id": "b-amy", "tenantId": TENANT, "courseId": "c-yoga", "userId": "u-amy"},
            {"id": "b-bo", "tenantId": TENANT, "courseId": "c-yoga", "userId": "u-bo"},
        ],
    }


def events(now: dt.datetime, run: str) -> list[dict[str, Any]]:
    """One event of each of the 14 types; `run` makes the ids unique per demo run."""
    start = (now + dt.timedelta(days=1)).replace(hour=11, minute=0, second=0, microsecond=0)
    stamp = now.isoformat()

    def event(kind: str, data: dict[str, Any], user: str | None = "u-amy") -> dict[str, Any]:
        meta = {"userId": user} if user else {}
        return {
            "eventId": f"demo-{run}-{kind}",
            "eventType": kind,
            "tenantId": TENANT,
            "timestamp": stamp,
            "source": "kyo.demo",
            "data": data,
            "metadata": meta,
        }

    course = {"courseId": "c-yoga", "courseName": "Morning Yoga", "startTime": start.isoformat()}
    return [
        event(
            "file.uploaded",
            {
                "fileName": "members.csv",
                "category": "import",
                "uploadedBy": "admin-1",
                "sizeBytes": 52_431,
            },
            "admin-1",
        ),
        event(
            "file.processed",
            {
                "fileName": "members.csv",
                "category": "import",
                "status": "completed",
                "downloadUrl": "https://kyo.app/files/members.csv",
            },
            "admin-1",
        ),
        event(
            "file.virus_detected",
            {"fileName": "invoice.exe", "uploadedBy": "u-amy", "threatName": "EICAR-Test-File"},
            None,
        ),
        event("member.registered", {"memberName": "Amy Chen"}),
        event(
            "member.checked_in",
            {"memberName": "Amy Chen", "checkedInAt": stamp, "location": "Taipei Main"},
        ),
        event(
            "member.membership_expiring",
            {
                "memberName": "Amy Chen",
                "membershipType": "Gold",
                "expiryDate": (now.date() + dt.timedelta(days=7)).isoformat(),
                "daysLeft": 7,
            },
        ),
        event(
            "course.booking_confirmed", {**course, "instructorName": "Lin", "location": "Room A"}
        ),
        event("course.cancelled", {**course, "reason": "Instructor ill"}, None),
        event(
            "course.reminder",
            {**course, "instructorName": "Lin", "location": "Room A", "remainingSlots": 3},
        ),
        event(
            "payment.success",
            {
                "paymentId": "pay-1001",
                "amount": "1200.00",
                "currency": "TWD",
                "description": "Gold membership",
            },
        ),
        event(
            "payment.failed",
            {
                "paymentId": "pay-1002",
                "amount": "1200.00",
                "currency": "TWD",
                "reason": "card declined",
                "retryUrl": "https://kyo.app/pay/1002",
            },
        ),
        event(
            "invoice.generated",
            {
                "invoiceNumber": "INV-2026-0042",
                "amount": "1200.00",
                "currency": "TWD",
                "downloadUrl": "https://kyo.app/invoices/42.pdf",
            },
        ),
        event(
            "system.backup_completed",
            {"backupId": "bk-20261122", "sizeBytes": 734_003_200, "completedAt": stamp},
            None,
        ),
        event(
            "system.maintenance",
            {
                "startsAt": start.isoformat(),
                "endsAt": (start + dt.timedelta(hours=2)).isoformat(),
                "message": "Scheduled database upgrade",
            },
            None,
        ),
    ]
