"""The auto-shutdown schedule's time zone: the user's local zone, as the Windows id that ARM expects."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

# Windows time zone ids -> the IANA zones of each that most users have; anything else falls back to UTC.
_ZONES = {
    "UTC": "UTC Etc/UTC GMT",
    "GMT Standard Time": "Europe/London Europe/Dublin Europe/Lisbon",
    "Romance Standard Time": "Europe/Paris Europe/Brussels Europe/Madrid Europe/Copenhagen",
    "W. Europe Standard Time": "Europe/Berlin Europe/Amsterdam Europe/Rome Europe/Vienna "
    "Europe/Zurich Europe/Stockholm Europe/Oslo",
    "Central Europe Standard Time": "Europe/Prague Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "GTB Standard Time": "Europe/Athens Europe/Bucharest",
    "FLE Standard Time": "Europe/Helsinki Europe/Kiev Europe/Kyiv",
    "Turkey Standard Time": "Europe/Istanbul",
    "Russian Standard Time": "Europe/Moscow",
    "Eastern Standard Time": "America/New_York America/Toronto America/Detroit",
    "Central Standard Time": "America/Chicago America/Winnipeg",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Mountain Standard Time": "America/Denver America/Edmonton",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles America/Vancouver",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "SA Pacific Standard Time": "America/Bogota America/Lima",
    "Pacific SA Standard Time": "America/Santiago",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Egypt Standard Time": "Africa/Cairo",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Arabian Standard Time": "Asia/Dubai",
    "Israel Standard Time": "Asia/Jerusalem",
    "Iran Standard Time": "Asia/Tehran",
    "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Kolkata Asia/Calcutta",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "SE Asia Standard Time": "Asia/Bangkok Asia/Jakarta",
    "Singapore Standard Time": "Asia/Singapore Asia/Kuala_Lumpur",
    "China Standard Time": "Asia/Shanghai Asia/Hong_Kong",
    "Taipei Standard Time": "Asia/Taipei",
    "Korea Standard Time": "Asia/Seoul",
    "Tokyo Standard Time": "Asia/Tokyo",
    "W. Australia Standard Time": "Australia/Perth",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney Australia/Melbourne",
    "New Zealand Standard Time": "Pacific/Auckland",
}
IANA_TO_WINDOWS = {iana: windows for windows, zones in _ZONES.items() for iana in zones.split()}


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
    """(HHMM, Windows zone id) keeping the user's wall-clock time; a zone without a known Windows id becomes UTC at
    today's offset (DST then shifts it by an hour)."""
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
