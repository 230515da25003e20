"""One valid, realistic `data` payload per event type (docs/events.md), for reuse in tests."""

from __future__ import annotations

from typing import Any

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "file.uploaded": {
        "fileName": "體態照片-2026-11.jpg",
        "category": "progress_photos",
        "uploadedBy": "王小明",
        "sizeBytes": 2_457_600,
    },
    "file.processed": {
        "fileName": "體態照片-2026-11.jpg",
        "category": "progress_photos",
        "status": "completed",
        "downloadUrl": "https://cdn.kyo.app/files/f-7f3a/photo.jpg",
    },
    "file.virus_detected": {
        "fileName": "invoice_scan.pdf.exe",
        "uploadedBy": "王小明",
        "threatName": "Win.Trojan.Agent-1234",
    },
    "member.registered": {"memberName": "王小明"},
    "member.checked_in": {
        "memberName": "王小明",
        "checkedInAt": "2026-11-23T10:05:00+00:00",
        "location": "信義店",
    },
    "member.membership_expiring": {
        "memberName": "王小明",
        "membershipType": "Gold",
        "expiryDate": "2026-11-29",
        "daysLeft": 7,
    },
    "course.booking_confirmed": {
        "courseId": "c-yoga-1123",
        "courseName": "空中瑜珈",
        "instructorName": "林小美",
        "startTime": "2026-11-23T19:00:00+08:00",
        "location": "A 教室",
    },
    "course.cancelled": {
        "courseId": "c-yoga-1123",
        "courseName": "空中瑜珈",
        "startTime": "2026-11-23T19:00:00+08:00",
        "reason": "教練臨時請假",
    },
    "course.reminder": {
        "courseId": "c-yoga-1123",
        "courseName": "空中瑜珈",
        "instructorName": "林小美",
        "startTime": "2026-11-23T19:00:00+08:00",
        "location": "A 教室",
        "remainingSlots": 3,
    },
    "payment.success": {
        "paymentId": "pay_20261122_0001",
        "amount": "1200.00",
        "currency": "TWD",
        "description": "Gold 月費",
    },
    "payment.failed": {
        "paymentId": "pay_20261122_0002",
        "amount": "1200.00",
        "currency": "TWD",
        "reason": "信用卡額度不足",
        "retryUrl": "https://kyo.app/billing/retry/pay_20261122_0002",
    },
    "invoice.generated": {
        "invoiceNumber": "AB-12345678",
        "amount": 1200,
        "currency": "TWD",
        "downloadUrl": "https://kyo.app/invoices/AB-12345678.pdf",
    },
    "system.backup_completed": {
        "backupId": "bk-20261122-0300",
        "sizeBytes": 1_288_490_189,
        "completedAt": "2026-11-21T19:12:00+00:00",
    },
    "system.maintenance": {
        "startsAt": "2026-11-29T18:00:00+00:00",
        "endsAt": "2026-11-29T22:00:00+00:00",
        "message": "升級資料庫與付款模組,期間無法預約課程及付款。",
    },
}
