# SPDX-License-Identifier: Apache-2.0
"""Providers whose terms forbid bulk pre-downloading of tiles (see README "Aerial tiles")."""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

#: Host suffix -> provider. OSM: bulk pre-download for offline use prohibited; Esri, Google: no
#: scraping/storing beyond their terms; Mapbox, Bing: per-request licences.
RESTRICTED_HOSTS = {
    "openstreetmap.org": "OpenStreetMap",
    "openstreetmap.fr": "OpenStreetMap France",
    "arcgisonline.com": "Esri ArcGIS Online",
    "arcgis.com": "Esri ArcGIS",
    "google.com": "Google",
    "googleapis.com": "Google",
    "mapbox.com": "Mapbox",
    "virtualearth.net": "Microsoft Bing Maps",
    "bing.com": "Microsoft Bing Maps",
}


def restricted_provider(spec: str) -> Optional[str]:
    """The provider name when ``spec`` is a URL on a server whose terms forbid bulk downloads, else None."""
    if not spec.startswith(("http://", "https://")):
        return None
    host = (urlsplit(spec.replace("{s}", "a")).hostname or "").lower()
    for suffix, name in RESTRICTED_HOSTS.items():
        if host == suffix or host.endswith("." + suffix):
            return name
    return None
