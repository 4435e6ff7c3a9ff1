"""Campaigns: the campaign spec and its checks, the campaigns table, cross-channel delivery,
recurring schedules, previews and test sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.campaigns.cross_channel import (
        ENGAGED,
        NOT_CHOSEN,
        NOT_REACHED,
        Fallback,
        count_own_sends,
        exclude_engaged,
    )
    from core.campaigns.preview import preview_customer, preview_unsubscribe_url
    from core.campaigns.schedules import RecurrenceSpec, RegisterRunInput, ScheduledRunInput
    from core.campaigns.send_time import OptimalSendTime, SendTime, check_send_time
    from core.campaigns.spec import CampaignSpec, Variant, check_campaign, effective_split
    from core.campaigns.store import CampaignRecord, CampaignStatus, get_campaign
    from core.campaigns.test_send_io import TestSendInput, TestSendMessage, TestSendResult

_EXPORTS = {
    "CampaignRecord": "store",
    "CampaignSpec": "spec",
    "CampaignStatus": "store",
    "ENGAGED": "cross_channel",
    "Fallback": "cross_channel",
    "NOT_CHOSEN": "cross_channel",
    "NOT_REACHED": "cross_channel",
    "OptimalSendTime": "send_time",
    "RecurrenceSpec": "schedules",
    "RegisterRunInput": "schedules",
    "ScheduledRunInput": "schedules",
    "SendTime": "send_time",
    "TestSendInput": "test_send_io",
    "TestSendMessage": "test_send_io",
    "TestSendResult": "test_send_io",
    "Variant": "spec",
    "check_campaign": "spec",
    "check_send_time": "send_time",
    "count_own_sends": "cross_channel",
    "effective_split": "spec",
    "exclude_engaged": "cross_channel",
    "get_campaign": "store",
    "preview_customer": "preview",
    "preview_unsubscribe_url": "preview",
}
__all__ = [
    "ENGAGED",
    "NOT_CHOSEN",
    "NOT_REACHED",
    "CampaignRecord",
    "CampaignSpec",
    "CampaignStatus",
    "Fallback",
    "OptimalSendTime",
    "RecurrenceSpec",
    "RegisterRunInput",
    "ScheduledRunInput",
    "SendTime",
    "TestSendInput",
    "TestSendMessage",
    "TestSendResult",
    "Variant",
    "check_campaign",
    "check_send_time",
    "count_own_sends",
    "effective_split",
    "exclude_engaged",
    "get_campaign",
    "preview_customer",
    "preview_unsubscribe_url",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
