"""Generating the demo store: catalog, knowledge-base articles and orders (pure, seeded).

Orders come from two disjoint pools of names, email domains and order-number prefixes:
``train`` (used to build training conversations) and ``heldout`` (used only by the
evaluation), so no entity value of the evaluation ever occurs in training.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from assistant.tools.shop import Article, Order, OrderItem, Product, ShopData

STORE_NAME = "Northwind Outfitters"
DEMO_TENANT = "northwind"

CARRIERS = ("UPS", "FedEx", "USPS", "DHL")
STATUSES = ("processing", "shipped", "in_transit", "out_for_delivery", "delivered", "cancelled")


_PRODUCTS = [
    ("Trail Runner Shoes", "footwear", 8900),
    ("Summit Hiking Boots", "footwear", 15900),
    ("Canvas Sneakers", "footwear", 5400),
    ("Wool Hiking Socks", "footwear", 1800),
    ("Storm Rain Jacket", "outerwear", 12900),
    ("Down Puffer Vest", "outerwear", 9900),
    ("Fleece Pullover", "outerwear", 6400),
    ("Windbreaker Shell", "outerwear", 7900),
    ("Merino Base Layer", "apparel", 7200),
    ("Quick-Dry T-Shirt", "apparel", 2900),
    ("Cargo Hiking Pants", "apparel", 6900),
    ("Sun Hat", "apparel", 3200),
    ("Daypack 20L", "packs", 7400),
    ("Expedition Pack 60L", "packs", 22900),
    ("Hip Pack", "packs", 3400),
    ("Dry Bag 10L", "packs", 2400),
    ("Two-Person Tent", "camping", 24900),
    ("Ultralight Sleeping Bag", "camping", 18900),
    ("Inflatable Sleeping Pad", "camping", 8900),
    ("Camp Stove", "camping", 5900),
    ("Titanium Mug", "camping", 2900),
    ("Headlamp 300", "camping", 3900),
    ("Water Filter Bottle", "camping", 4400),
    ("Trekking Poles", "camping", 9400),
]

ARTICLES = [
    Article(
        "shipping",
        "Shipping times",
        "Standard shipping takes 3 to 5 business days and is free on orders over $50; "
        "express shipping takes 1 to 2 business days for $15.",
        ("shipping", "delivery", "how long", "ship"),
    ),
    Article(
        "returns",
        "Returns",
        "You can return unworn items within 30 days of delivery for a full refund; "
        "start a return from your account page and print the free return label.",
        ("return", "send back"),
    ),
    Article(
        "refunds",
        "Refunds",
        "Refunds go back to the original payment method within 5 business days "
        "after we receive your return.",
        ("refund", "money back"),
    ),
    Article(
        "exchanges",
        "Exchanges",
        "To exchange an item for another size or color, return it and place a new order; "
        "exchanges for the same item ship free.",
        ("exchange", "swap", "size"),
    ),
    Article(
        "warranty",
        "Warranty",
        "All gear has a 2-year warranty against defects in materials and workmanship; "
        "send us a photo of the defect and we will repair or replace it.",
        ("warranty", "defect", "broken"),
    ),
    Article(
        "payment",
        "Payment methods",
        "We accept Visa, Mastercard, American Express, PayPal and gift cards; "
        "your card is charged when the order ships.",
        ("payment", "pay", "card", "paypal"),
    ),
    Article(
        "account",
        "Your account",
        "You can change your address, password and email on the account page; "
        "use Forgot password on the sign-in page to reset your password.",
        ("account", "password", "login", "address"),
    ),
    Article(
        "cancellation",
        "Cancelling an order",
        "Orders can be cancelled until they ship; after that, return the items once they arrive.",
        ("cancel",),
    ),
    Article(
        "international",
        "International shipping",
        "We ship to Canada, the UK and the EU; international delivery takes "
        "7 to 14 business days and duties are paid at delivery.",
        ("international", "abroad", "canada", "europe", "uk"),
    ),
    Article(
        "contact",
        "Contacting us",
        "Our support team answers by chat every day from 8am to 8pm Eastern time.",
        ("hours", "contact", "phone"),
    ),
]

_POOLS = {
    "train": {
        "first": [
            "Alice",
            "Ben",
            "Chloe",
            "Daniel",
            "Emma",
            "Felix",
            "Grace",
            "Hugo",
            "Isla",
            "Jack",
            "Kara",
            "Liam",
            "Maya",
            "Noah",
            "Olivia",
            "Paul",
            "Quinn",
            "Rosa",
        ],
        "last": [
            "Smith",
            "Garcia",
            "Chen",
            "Novak",
            "Okafor",
            "Rossi",
            "Kim",
            "Larsen",
            "Dubois",
            "Silva",
            "Khan",
            "Murphy",
        ],
        "domains": ["example.com", "mail.test", "inbox.example", "post.example"],
        "prefixes": ["NW", "NO", "NX", "NR"],
    },
    "heldout": {
        "first": ["Sofia", "Tariq", "Uma", "Victor", "Wendy", "Xavier", "Yara", "Zane"],
        "last": ["Andersen", "Bianchi", "Costa", "Haddad"],
        "domains": ["heldout.example", "eval.test"],
        "prefixes": ["HX", "HQ"],
    },
}


def _tracking(rng: random.Random, carrier: str) -> str:
    alnum = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    if carrier == "UPS":
        return "1Z" + "".join(rng.choice(alnum) for _ in range(16))
    if carrier == "FedEx":
        return "".join(rng.choice("0123456789") for _ in range(12))
    if carrier == "USPS":
        return "94" + "".join(rng.choice("0123456789") for _ in range(20))
    return "JD" + "".join(rng.choice("0123456789") for _ in range(9)) + "GB"


def _order(rng: random.Random, split: str, products: list[Product], today: date) -> Order:
    pool = _POOLS[split]
    first, last = rng.choice(pool["first"]), rng.choice(pool["last"])
    email = f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(pool['domains'])}"
    number = f"{rng.choice(pool['prefixes'])}-{rng.randint(100000, 999999)}"
    status = rng.choice(STATUSES)
    placed = today - timedelta(days=rng.randint(1, 40))
    shipped = status not in ("processing", "cancelled")
    carrier = rng.choice(CARRIERS) if shipped else None
    items = tuple(
        OrderItem(p.sku, p.name, rng.choice((1, 1, 1, 2)), p.price_cents)
        for p in rng.sample(products, rng.choice((1, 1, 2, 3)))
    )
    eta = (
        None
        if status in ("cancelled", "delivered")
        else placed + timedelta(days=rng.randint(4, 12))
    )
    return Order(
        number=number,
        email=email,
        customer=f"{first} {last}",
        status=status,
        carrier=carrier,
        tracking_number=_tracking(rng, carrier) if carrier else None,
        placed_on=placed,
        estimated_delivery=eta,
        items=items,
        split=split,
    )


def build_shop(
    seed: int = 7,
    train_orders: int = 400,
    heldout_orders: int = 120,
    today: date = date(2026, 11, 1),
) -> ShopData:
    """The whole demo store, the same for the same arguments."""
    rng = random.Random(seed)
    products = [
        Product(sku=f"NW-{index:04d}", name=name, category=category, price_cents=price)
        for index, (name, category, price) in enumerate(_PRODUCTS, start=1)
    ]
    store = ShopData(products=products, articles=list(ARTICLES))
    seen: set[str] = set()
    for split, count in (("train", train_orders), ("heldout", heldout_orders)):
        while len(store.orders_in(split)) < count:
            order = _order(rng, split, products, today)
            if order.number not in seen:
                seen.add(order.number)
                store.orders.append(order)
    return store
