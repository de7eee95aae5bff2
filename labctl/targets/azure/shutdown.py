"""The auto-shutdown schedule's time zone: the user's local zone, as the Windows id that ARM expects."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

# IANA -> Windows time zone ids for the zones most users have; anything else falls back to UTC.
IANA_TO_WINDOWS = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "GMT": "UTC",
    "Europe/London": "GMT Standard Time",
    "Europe/Dublin": "GMT Standard Time",
    "Europe/Lisbon": "GMT Standard Time",
    "Europe/Paris": "Romance Standard Time",
    "Europe/Brussels": "Romance Standard Time",
    "Europe/Madrid": "Romance Standard Time",
    "Europe/Copenhagen": "Romance Standard Time",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/Rome": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Stockholm": "W. Europe Standard Time",
    "Europe/Oslo": "W. Europe Standard Time",
    "Europe/Prague": "Central Europe Standard Time",
    "Europe/Budapest": "Central Europe Standard Time",
    "Europe/Warsaw": "Central European Standard Time",
    "Europe/Athens": "GTB Standard Time",
    "Europe/Bucharest": "GTB Standard Time",
    "Europe/Helsinki": "FLE Standard Time",
    "Europe/Kiev": "FLE Standard Time",
    "Europe/Kyiv": "FLE Standard Time",
    "Europe/Istanbul": "Turkey Standard Time",
    "Europe/Moscow": "Russian Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Toronto": "Eastern Standard Time",
    "America/Detroit": "Eastern Standard Time",
    "America/Chicago": "Central Standard Time",
    "America/Winnipeg": "Central Standard Time",
    "America/Mexico_City": "Central Standard Time (Mexico)",
    "America/Denver": "Mountain Standard Time",
    "America/Edmonton": "Mountain Standard Time",
    "America/Phoenix": "US Mountain Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
    "America/Vancouver": "Pacific Standard Time",
    "America/Anchorage": "Alaskan Standard Time",
    "Pacific/Honolulu": "Hawaiian Standard Time",
    "America/Halifax": "Atlantic Standard Time",
    "America/St_Johns": "Newfoundland Standard Time",
    "America/Sao_Paulo": "E. South America Standard Time",
    "America/Argentina/Buenos_Aires": "Argentina Standard Time",
    "America/Bogota": "SA Pacific Standard Time",
    "America/Lima": "SA Pacific Standard Time",
    "America/Santiago": "Pacific SA Standard Time",
    "Africa/Johannesburg": "South Africa Standard Time",
    "Africa/Cairo": "Egypt Standard Time",
    "Africa/Lagos": "W. Central Africa Standard Time",
    "Africa/Nairobi": "E. Africa Standard Time",
    "Asia/Dubai": "Arabian Standard Time",
    "Asia/Jerusalem": "Israel Standard Time",
    "Asia/Tehran": "Iran Standard Time",
    "Asia/Karachi": "Pakistan Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Asia/Calcutta": "India Standard Time",
    "Asia/Dhaka": "Bangladesh Standard Time",
    "Asia/Bangkok": "SE Asia Standard Time",
    "Asia/Jakarta": "SE Asia Standard Time",
    "Asia/Singapore": "Singapore Standard Time",
    "Asia/Kuala_Lumpur": "Singapore Standard Time",
    "Asia/Shanghai": "China Standard Time",
    "Asia/Hong_Kong": "China Standard Time",
    "Asia/Taipei": "Taipei Standard Time",
    "Asia/Seoul": "Korea Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Australia/Perth": "W. Australia Standard Time",
    "Australia/Adelaide": "Cen. Australia Standard Time",
    "Australia/Brisbane": "E. Australia Standard Time",
    "Australia/Sydney": "AUS Eastern Standard Time",
    "Australia/Melbourne": "AUS Eastern Standard Time",
    "Pacific/Auckland": "New Zealand Standard Time",
}


def local_iana_zone() -> str | None:
    """The local IANA zone name, from TZ, /etc/timezone or the /etc/localtime link."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if (tz and "/" in tz) or tz in ("UTC", "GMT"):
        return tz
    try:
        text = Path("/etc/timezone").read_text().strip()
        if text:
            return text
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return None
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else None


def schedule_time(hhmm: str, zone: str | None = None) -> tuple[str, str]:
    """(HHMM, Windows zone id) for ARM's shutdown schedule, keeping the user's wall-clock time.

    A zone without a known Windows id is converted to UTC at today's offset (DST then shifts it by an hour).
    """
    zone = zone if zone is not None else local_iana_zone()
    hour, minute = (int(x) for x in hhmm.split(":"))
    if zone and zone in IANA_TO_WINDOWS:
        return f"{hour:02d}{minute:02d}", IANA_TO_WINDOWS[zone]
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    if zone:
        try:
            from zoneinfo import ZoneInfo

            offset = datetime.now(ZoneInfo(zone)).utcoffset() or timedelta(0)
        except Exception:  # an unknown zone name: keep the process's offset
            pass
    total = (hour * 60 + minute - int(offset.total_seconds() // 60)) % (24 * 60)
    return f"{total // 60:02d}{total % 60:02d}", "UTC"
