"""A stand-in for the Azure Retail Prices API (``prices.azure.com/api/retail/prices``) on 127.0.0.1.

The ``retail_prices_*.json`` files beside this module hold answers in the API's shape as its documentation
describes it (learn.microsoft.com, "Azure Retail Prices REST API": ``BillingCurrency``, ``Items`` with
``retailPrice``, ``unitOfMeasure``, ``type``, ``armSkuName``, ``armRegionName``, ``productName``, ``skuName``,
``isPrimaryMeterRegion``, ``effectiveStartDate``; ``NextPageLink``; ``Count``). They were written for these tests,
not captured from the service: the prices are US East list prices of their time, and the rows were chosen to
hold what a client must tell apart (Linux and Windows meters, Spot and Low Priority, DevTest, Reservation,
an older price, a non-primary meter, a zero-priced companion meter).

The server answers a ``$filter`` with the file whose service, region and SKU it names (no match: no items, as
the API does), cut into pages of ``page_size`` items linked by ``NextPageLink`` with ``$skip``, as the API pages.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

HERE = Path(__file__).parent
FILES = {
    ("Virtual Machines", "eastus", "Standard_NC4as_T4_v3"): "retail_prices_vm_eastus_nc4as_t4_v3.json",
    ("Storage", "eastus", "P15 LRS"): "retail_prices_disk_eastus_p15.json",
    ("Virtual Network", "eastus", "Standard"): "retail_prices_ip_eastus.json",
    ("NAT Gateway", "eastus", "Standard"): "retail_prices_nat_eastus.json",
}


# Answers a test may add (RetailPrices(more=...)): the CPU default's meters, for a lab that needs no GPU.
D4S_V5 = {("Virtual Machines", "eastus", "Standard_D4s_v5"): "retail_prices_vm_eastus_d4s_v5.json"}


def _answer_file(odata: str, files: dict[tuple[str, str, str], str]) -> str | None:
    def value(field: str) -> str | None:
        found = re.search(rf"{field} eq '([^']*)'", odata)  # case-sensitive, as api-version 2023-01-01-preview is
        return found.group(1) if found else None

    service, region = value("serviceName") or value("productName"), value("armRegionName")
    sku = value("armSkuName") or value("skuName")
    return files.get((service or "", region or "", sku or ""))


class RetailPrices:
    def __init__(self, page_size: int = 4, more: dict[tuple[str, str, str], str] | None = None) -> None:
        self.page_size = page_size
        self.files = {**FILES, **(more or {})}
        self.requests: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/retail/prices"

    def start(self) -> RetailPrices:
        prices = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                prices.requests.append(query)
                body = json.dumps(prices.page(query)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def page(self, query: dict[str, str]) -> dict[str, Any]:
        name = _answer_file(query.get("$filter", ""), self.files)
        data = json.loads((HERE / name).read_text()) if name else {"BillingCurrency": "USD", "Items": []}
        items = data["Items"]
        skip = int(query.get("$skip", "0"))
        chunk = items[skip : skip + self.page_size]
        link = None
        if skip + self.page_size < len(items):
            link = f"{self.url}?{urlencode({**query, '$skip': str(skip + self.page_size)})}"
        return {**data, "Items": chunk, "NextPageLink": link, "Count": len(chunk)}
