"""ShopData-support conversations: orders, policies, problems, hand-offs, follow-ups."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.phrases import Phrases, add_training, entity_split, join, maybe
from assistant.tools.create_ticket import ticket_view
from assistant.tools.handoff_to_human import handoff_view
from assistant.tools.lookup_order import NOT_FOUND, order_view
from assistant.tools.search_kb import KB_TOPICS, kb_view
from assistant.tools.shop import Order, ShopData

GREETING = Phrases(
    [
        "Hi,",
        "Hello!",
        "Hey there,",
        "Good morning,",
        "Hi there!",
        "Hello,",
        "Hey,",
        "Good evening,",
        "Hiya,",
        "Greetings,",
    ]
)
ANGRY = Phrases(
    [
        "This is ridiculous.",
        "I'm really annoyed.",
        "Seriously, this is taking forever!",
        "I am not happy at all.",
        "This is the worst service ever.",
        "I've been waiting for ages!",
        "Honestly, I'm fed up.",
        "Why is this so slow?!",
        "Unacceptable.",
        "I'm very frustrated.",
    ]
)
THANKS = Phrases(
    [
        "thanks",
        "thank you!",
        "Thanks a lot.",
        "great, thanks",
        "ok thank you",
        "cheers",
        "Thanks so much!",
        "perfect, thanks",
        "thx",
        "Much appreciated.",
    ]
)

ASK_STATUS = Phrases(
    [
        "Where is my order {order}? My email is {email}.",
        "Can you check order {order} for {email}?",
        "What's the status of order {order}? Email: {email}",
        "I'd like an update on {order}, the email on it is {email}.",
        "order {order}, email {email} - where is it?",
        "Has my order {order} shipped yet? I used {email}.",
        "Could you look up {order}? It's under {email}.",
        "Status of {order} please ({email})",
        "I ordered something, number {order}, email {email}. When does it come?",
        "Checking on my order {order}. My email address is {email}.",
        "Any news on order {order}? {email}",
        "Hi, it's {email}, can you tell me where order {order} is?",
        "My order {order} hasn't arrived. The email is {email}.",
        "Is {order} on its way? Email {email}",
        "Track order {order} for {email} please.",
    ]
)
ASK_TRACKING = Phrases(
    [
        "What's the tracking number for {order}? Email {email}.",
        "Can I get tracking for order {order}? I'm {email}.",
        "I need the tracking info for {order} ({email}).",
        "Which carrier has my order {order}? My email: {email}",
        "Send me the tracking number of {order} please, email is {email}",
        "Where can I track {order}? {email}",
        "tracking for {order} / {email}?",
        "How do I track my package {order}? The email is {email}.",
        "Who is delivering order {order}? Email {email}.",
        "Please share the tracking details for {order}, email {email}.",
    ]
)
ASK_STATUS_NO_EMAIL = Phrases(
    [
        "Where is my order {order}?",
        "Can you check order {order}?",
        "What's the status of {order}?",
        "Has {order} shipped?",
        "Any update on order {order}?",
        "I'm waiting for {order}, where is it?",
        "Look up {order} please.",
        "my order number is {order}, is it coming?",
        "Track {order}",
        "Is order {order} late?",
    ]
)
ASK_STATUS_NO_ID = Phrases(
    [
        "Where is my order?",
        "Can you check on my order?",
        "I want to know where my package is.",
        "Has my order shipped?",
        "When will my stuff arrive?",
        "Can you track my order?",
        "I haven't received my order yet.",
        "What's the status of my purchase?",
        "My package is late.",
        "Where's my delivery?",
    ]
)
ASK_FOR_EMAIL = Phrases(
    [
        "I can check that. What email address did you use for order {order}?",
        "Sure! To look up {order}, I need the email address on the order.",
        "Happy to help. Which email was order {order} placed with?",
        "Please tell me the email address you used for {order}, and I'll look it up.",
        "Of course. Could you share the email on order {order}?",
    ]
)
ASK_FOR_ID = Phrases(
    [
        "I can help with that. What's your order number and the email you used?",
        "Sure! Please send me your order number and the email address on the order.",
        "Happy to check. Could you give me the order number and your email?",
        "To find your order I need its number and the email it was placed with.",
        "Of course. What is the order number, and which email did you use?",
    ]
)
GIVE_EMAIL = Phrases(
    [
        "It's {email}",
        "{email}",
        "my email is {email}",
        "I used {email}",
        "email: {email}",
        "sure, {email}",
        "{email} thanks",
        "The email is {email}.",
        "it should be {email}",
        "I think it was {email}",
    ]
)
GIVE_BOTH = Phrases(
    [
        "Order {order}, email {email}",
        "{order} and {email}",
        "It's {order}, {email}",
        "number {order}, email is {email}",
        "{order} / {email}",
        "Sure: {order} with {email}",
        "order number {order}, my email {email}",
        "{email}, order {order}",
        "Here: {order} {email}",
        "It is {order} and I used {email}",
    ]
)

REPLY = {
    "processing": Phrases(
        [
            "Your order {order} is being prepared and hasn't shipped yet. "
            "It should arrive by {eta}.",
            "Order {order} is still processing in our warehouse. Estimated delivery: {eta}.",
            "Good news: order {order} is confirmed and being packed. Expected by {eta}.",
            "Order {order} hasn't left the warehouse yet; we expect it to reach you by {eta}.",
            "I checked order {order}: it is processing and should be delivered by {eta}.",
        ]
    ),
    "shipped": Phrases(
        [
            "Your order {order} has shipped with {carrier}. Tracking number: {tracking}. "
            "It should arrive by {eta}.",
            "Order {order} is on its way with {carrier} (tracking {tracking}). "
            "Estimated delivery: {eta}.",
            "Good news! {order} shipped via {carrier}; you can track it with {tracking}. "
            "Expected by {eta}.",
            "Order {order} left our warehouse with {carrier}. Tracking: {tracking}. "
            "Delivery is expected by {eta}.",
            "I found it: order {order} has shipped. Carrier: {carrier}, tracking number "
            "{tracking}, arriving by {eta}.",
        ]
    ),
    "in_transit": Phrases(
        [
            "Your order {order} is in transit with {carrier}. Tracking number: {tracking}. "
            "It should arrive by {eta}.",
            "Order {order} is on the move with {carrier} (tracking {tracking}) and is expected "
            "by {eta}.",
            "{order} is in transit. Track it with {carrier} using {tracking}; estimated "
            "delivery {eta}.",
            "Your package for order {order} is travelling with {carrier}. Tracking: {tracking}. "
            "Expected by {eta}.",
            "I checked order {order}: in transit with {carrier}, tracking number {tracking}, "
            "due by {eta}.",
        ]
    ),
    "out_for_delivery": Phrases(
        [
            "Great news: order {order} is out for delivery today with {carrier}. "
            "Tracking number: {tracking}.",
            "Order {order} is out for delivery with {carrier} (tracking {tracking}). "
            "It should reach you today.",
            "Your order {order} is on the delivery truck with {carrier} today. Tracking: {tracking}.",
            "{order} will be delivered today by {carrier}. You can follow it with {tracking}.",
            "I checked order {order}: it's out for delivery with {carrier}, tracking {tracking}.",
        ]
    ),
    "delivered": Phrases(
        [
            "Order {order} was delivered by {carrier}. Tracking number: {tracking}.",
            "Our records show order {order} as delivered ({carrier}, tracking {tracking}).",
            "Your order {order} has been delivered by {carrier}. If you can't find it, "
            "check with neighbours; the tracking number is {tracking}.",
            "{carrier} marked order {order} as delivered. Tracking: {tracking}.",
            "I checked order {order}: it was delivered by {carrier} (tracking {tracking}).",
        ]
    ),
    "cancelled": Phrases(
        [
            "Order {order} was cancelled, so it won't ship. Any payment is refunded to your "
            "original payment method.",
            "Your order {order} shows as cancelled. You have not been charged for it.",
            "Order {order} is cancelled. If that's a mistake, you're welcome to place it again.",
            "I see that order {order} was cancelled and will not be delivered.",
            "Order {order} has been cancelled; nothing will be shipped for it.",
        ]
    ),
}
REPLY_TRACKING = {
    "shipped": REPLY["shipped"],
    "in_transit": REPLY["in_transit"],
    "out_for_delivery": REPLY["out_for_delivery"],
    "delivered": REPLY["delivered"],
}
ANGRY_OPENER = Phrases(
    [
        "I'm sorry for the wait.",
        "I understand your frustration, and I'm sorry.",
        "I'm sorry about this.",
        "I apologise for the trouble.",
        "Sorry for the inconvenience.",
        "I completely understand, and I'm sorry.",
    ]
)
NOT_FOUND_REPLY = Phrases(
    [
        "I couldn't find an order {order} for {email}. Please check the order number and "
        "the email address.",
        "Sorry, there's no order {order} under {email}. Could you double-check both?",
        "I wasn't able to find order {order} with the email {email}. Is there a typo?",
        "No order {order} matches {email}. Please make sure you use the email from your "
        "order confirmation.",
        "I can't find {order} for {email}. Could you check the confirmation email for the "
        "right number?",
    ]
)

FOLLOW_ETA = Phrases(
    [
        "when will it arrive?",
        "so when does it get here?",
        "what's the delivery date?",
        "When should I expect it?",
        "ok, and the ETA?",
        "how long until it arrives?",
        "When exactly will it come?",
        "and when is it due?",
        "When will I get it?",
        "what day will it be delivered?",
    ]
)
FOLLOW_ETA_REPLY = Phrases(
    [
        "It's expected by {eta}.",
        "Order {order} should arrive by {eta}.",
        "The estimated delivery date is {eta}.",
        "You should have it by {eta}.",
        "Delivery is expected on or before {eta}.",
    ]
)
FOLLOW_ITEMS = Phrases(
    [
        "what was in that order?",
        "Which items are in it?",
        "what did I order again?",
        "Can you list the items?",
        "what's in the package?",
        "remind me what I bought",
        "Which products were in it?",
        "what items does it have?",
        "What's included?",
        "and what was in it?",
    ]
)
FOLLOW_ITEMS_REPLY = Phrases(
    [
        "Order {order} contains: {items}.",
        "It includes {items}.",
        "The order has {items}.",
        "You ordered {items}.",
        "In that order: {items}.",
    ]
)
FOLLOW_TOTAL = Phrases(
    [
        "how much did I pay?",
        "What was the total?",
        "how much was it?",
        "What did that order cost?",
        "total price?",
        "How much was I charged?",
        "what's the order total?",
        "and the price?",
        "How much did it come to?",
        "What did I spend on it?",
    ]
)
FOLLOW_TOTAL_REPLY = Phrases(
    [
        "The total for order {order} was {total}.",
        "You paid {total}.",
        "Order {order} came to {total}.",
        "It was {total} in total.",
        "The order total is {total}.",
    ]
)
CLOSING = Phrases(
    [
        "You're welcome! Anything else I can help with?",
        "Happy to help!",
        "Glad I could help. Have a great day!",
        "Anytime! Let me know if you need anything else.",
        "You're welcome.",
        "My pleasure!",
    ]
)

POLICY_QUESTION = {
    "shipping": Phrases(
        [
            "How long does shipping take?",
            "What are your shipping times?",
            "Is shipping free?",
            "how fast do you ship",
            "When will my order arrive if I order today?",
            "Do you offer express shipping?",
            "How much is shipping?",
            "what's the delivery time",
            "Do you have free delivery?",
            "How many days for delivery?",
        ]
    ),
    "returns": Phrases(
        [
            "How do I return something?",
            "What is your return policy?",
            "Can I return an item?",
            "I want to send something back.",
            "How long do I have to return stuff?",
            "Do you accept returns?",
            "return policy?",
            "Is there a fee for returns?",
            "Can I return worn shoes?",
            "how do returns work",
        ]
    ),
    "refunds": Phrases(
        [
            "When do I get my refund?",
            "How long do refunds take?",
            "Where is my money back?",
            "How are refunds paid?",
            "refund timing?",
            "I returned something, when is the refund?",
            "Do you refund to my card?",
            "how do refunds work",
            "When will I see the refund?",
            "Is the refund automatic?",
        ]
    ),
    "exchanges": Phrases(
        [
            "Can I exchange for a different size?",
            "How do exchanges work?",
            "I need a smaller size, can I swap it?",
            "Do you do exchanges?",
            "exchange policy?",
            "Can I change the color of an item I bought?",
            "The size is wrong, can I exchange it?",
            "how to exchange an item",
            "Is shipping free on exchanges?",
            "I want a bigger size.",
        ]
    ),
    "warranty": Phrases(
        [
            "Do your products have a warranty?",
            "My jacket zipper broke, is that covered?",
            "What's the warranty?",
            "warranty info please",
            "Is there a guarantee on gear?",
            "My tent pole snapped after a month.",
            "How long is the warranty?",
            "What does the warranty cover?",
            "Can you repair a defective item?",
            "The sole came off my boots.",
        ]
    ),
    "payment": Phrases(
        [
            "What payment methods do you accept?",
            "Can I pay with PayPal?",
            "Do you take Amex?",
            "When is my card charged?",
            "payment options?",
            "Can I use a gift card?",
            "Do you accept Mastercard?",
            "how can I pay",
            "Is my card charged right away?",
            "Which cards do you take?",
        ]
    ),
    "account": Phrases(
        [
            "How do I reset my password?",
            "I can't log in.",
            "How do I change my address?",
            "I forgot my password.",
            "account help please",
            "How can I update my email?",
            "Where do I change my shipping address?",
            "login problems",
            "How do I change my password?",
            "I'm locked out of my account.",
        ]
    ),
    "cancellation": Phrases(
        [
            "How do I cancel an order?",
            "Can I cancel my order?",
            "I want to cancel.",
            "Is it too late to cancel?",
            "cancel order please",
            "How can I cancel a purchase?",
            "Can an order be cancelled after it ships?",
            "I changed my mind, can I cancel?",
            "cancellation policy?",
            "Please help me cancel.",
        ]
    ),
    "international": Phrases(
        [
            "Do you ship internationally?",
            "Can you ship to Canada?",
            "Do you deliver to the UK?",
            "Shipping to Europe?",
            "international shipping?",
            "Do I pay customs duties?",
            "Can I order from Germany?",
            "How long does international delivery take?",
            "Do you ship abroad?",
            "Can you send it to France?",
        ]
    ),
    "contact": Phrases(
        [
            "What are your support hours?",
            "How can I contact you?",
            "Do you have a phone number?",
            "When is support open?",
            "contact info?",
            "Are you open on weekends?",
            "How do I reach customer service?",
            "support hours please",
            "Can I call someone?",
            "When can I chat with support?",
        ]
    ),
}
POLICY_REPLY = Phrases(
    [
        "{answer}",
        "Here's how it works: {answer}",
        "Good question! {answer}",
        "{answer} Anything else I can help with?",
        "Sure. {answer}",
        "Happy to explain. {answer}",
        "{answer} Let me know if you have other questions.",
        "According to our policy: {answer}",
        "Of course. {answer}",
        "Here you go: {answer}",
    ]
)

PROBLEM = {
    "damaged": Phrases(
        [
            "My order {order} arrived damaged. Email {email}.",
            "The item in {order} is broken ({email}).",
            "Order {order} came with a torn jacket. {email}",
            "Everything in {order} was crushed. I'm {email}.",
            "{order} arrived damaged, email is {email}",
            "The box for {order} was smashed and the stove is dented. {email}",
            "My tent from order {order} has a hole. {email}",
            "Package {order} arrived wet and ruined. Email {email}.",
            "The product in {order} is defective out of the box. {email}",
            "Order {order}: the zipper was already broken. My email is {email}.",
        ]
    ),
    "wrong_item": Phrases(
        [
            "I got the wrong item in order {order}. Email {email}.",
            "Order {order} has the wrong size. {email}",
            "You sent me someone else's stuff in {order}. {email}",
            "Wrong color in {order}, email {email}",
            "The item in {order} isn't what I ordered. I'm {email}.",
            "I received a different product for {order}. {email}",
            "{order} contained the wrong shoes. {email}",
            "This isn't my order {order}! {email}",
            "Order {order} came with the wrong item ({email}).",
            "Got the wrong thing in {order}. {email}",
        ]
    ),
    "missing_item": Phrases(
        [
            "An item is missing from order {order}. Email {email}.",
            "Order {order} arrived incomplete. {email}",
            "Only part of {order} came. {email}",
            "Something's missing in {order}, email is {email}",
            "The socks were not in my package {order}. {email}",
            "I didn't get everything in {order}. I'm {email}.",
            "{order} is missing a product. {email}",
            "Half of order {order} is missing! {email}",
            "Missing item in order {order} ({email}).",
            "Not everything arrived for {order}. {email}",
        ]
    ),
    "billing": Phrases(
        [
            "I was charged twice for order {order}. Email {email}.",
            "The charge for {order} is wrong. {email}",
            "Double charge on {order}! {email}",
            "Why was I billed more for {order}? {email}",
            "Billing problem with order {order}, email {email}",
            "I see an extra charge for {order}. I'm {email}.",
            "My card was charged for {order} twice. {email}",
            "The amount charged for {order} doesn't match. {email}",
            "Billing error on {order} ({email}).",
            "I got overcharged for order {order}. {email}",
        ]
    ),
}
TICKET_REPLY = Phrases(
    [
        "I'm sorry about that. I've opened ticket {ticket} for order {order}; our team will "
        "contact you by email.",
        "Sorry for the trouble! Ticket {ticket} is open for order {order} and someone will "
        "follow up soon.",
        "That shouldn't happen, sorry. I created ticket {ticket} about order {order}.",
        "I've logged this as ticket {ticket} for order {order}. We'll email you the next steps.",
        "Apologies! Your ticket number is {ticket} (order {order}); the team will be in touch.",
    ]
)

HUMAN_REQUEST = Phrases(
    [
        "I want to talk to a human.",
        "Can I speak to a real person?",
        "Get me an agent please.",
        "transfer me to a human",
        "Is there a person I can talk to?",
        "I need a human agent.",
        "Let me talk to someone real.",
        "human please",
        "Connect me with customer service staff.",
        "I'd rather talk to a person.",
        "Can a human help me instead?",
        "agent",
        "Put me through to a representative.",
        "Stop, I want a real human.",
        "Is anyone from staff available?",
    ]
)
COMPLAINT = Phrases(
    [
        "This is the third time I'm asking, I want to complain to a manager.",
        "I want to file a complaint with a person.",
        "Your bot is useless, get me a manager.",
        "I'm making a formal complaint, connect me to someone.",
        "I'm done with this, I want a supervisor.",
        "Escalate this to a human now.",
        "I want to speak to your manager about my terrible experience.",
        "Get me someone who can actually fix this.",
        "I need to complain to a real person.",
        "I demand to speak to a supervisor.",
    ]
)
HANDOFF_REPLY = Phrases(
    [
        "Of course. I've asked a human agent to join; they'll be with you shortly.",
        "No problem, I'm connecting you with a member of our team now. Please stay in the chat.",
        "Sure. A human agent will take over this conversation in a moment.",
        "I understand. I've passed this conversation to our support team; someone will reply "
        "here soon.",
        "Okay, I'm handing you over to a human colleague. Thanks for your patience.",
    ]
)


def _order_values(order: Order) -> dict[str, str]:
    view = order_view(order)
    return {
        "order": order.number,
        "email": order.email,
        "carrier": view.get("carrier", ""),
        "tracking": view.get("tracking_number", ""),
        "eta": view.get("estimated_delivery", ""),
        "items": _and_list(view["items"]),
        "total": view["total"],
    }


def _and_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _typed_order_number(rng: random.Random, number: str) -> str:
    """Customers type order numbers in several ways; the extractor normalises them."""
    form = rng.random()
    if form < 0.7:
        return number
    if form < 0.85:
        return number.lower()
    return number.replace("-", "")


def _status_facts(order: Order, values: dict[str, str]) -> list[str]:
    facts = [values["order"]]
    if order.status in ("shipped", "in_transit", "out_for_delivery", "delivered"):
        facts += [values["carrier"], values["tracking"]]
    if order.status in ("processing", "shipped", "in_transit"):
        facts.append(values["eta"])
    return facts


def _reply_for(order: Order, rng: random.Random, split: str, angry: bool) -> str:
    values = _order_values(order)
    reply = REPLY[order.status].pick(rng, split, **values)
    if angry:
        reply = join(ANGRY_OPENER.pick(rng, split), reply)
    return reply


def order_status(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    order = rng.choice(store.orders_in(entity_split(split)))
    values = _order_values(order)
    angry = rng.random() < 0.2
    tracking = order.status in REPLY_TRACKING and rng.random() < 0.3
    intent = "order_tracking" if tracking else "order_status"
    dialogue = Dialogue(split, "support", intent, "widget")
    asked = (ASK_TRACKING if tracking else ASK_STATUS).pick(
        rng, split, order=_typed_order_number(rng, order.number), email=order.email
    )
    opener = ANGRY.pick(rng, split) if angry else maybe(rng, 0.4, GREETING, split)
    arguments = {"order_id": order.number, "email": order.email}
    dialogue.user(
        join(opener, asked),
        tool="lookup_order",
        arguments=arguments,
        facts=_status_facts(order, values),
    )
    dialogue.call("lookup_order", arguments, order_view(order))
    dialogue.say(_reply_for(order, rng, split, angry))
    _follow_ups(rng, dialogue, order, split)
    return dialogue


def _follow_ups(rng: random.Random, dialogue: Dialogue, order: Order, split: str) -> None:
    values = _order_values(order)
    options: list[tuple[Phrases, Phrases, list[str]]] = [
        (FOLLOW_ITEMS, FOLLOW_ITEMS_REPLY, [order_view(order)["items"][0]]),
        (FOLLOW_TOTAL, FOLLOW_TOTAL_REPLY, [values["total"]]),
    ]
    if values["eta"]:
        options.append((FOLLOW_ETA, FOLLOW_ETA_REPLY, [values["eta"]]))
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        question, answer, facts = options.pop(rng.randrange(len(options)))
        dialogue.user(question.pick(rng, split), facts=facts)
        dialogue.say(answer.pick(rng, split, **values))
        if not options:
            break
    if rng.random() < 0.3:
        dialogue.user(THANKS.pick(rng, split))
        dialogue.say(CLOSING.pick(rng, split))


def order_missing_email(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    order = rng.choice(store.orders_in(entity_split(split)))
    values = _order_values(order)
    dialogue = Dialogue(split, "support", "order_missing_email", "widget")
    typed = _typed_order_number(rng, order.number)
    dialogue.user(
        join(maybe(rng, 0.4, GREETING, split), ASK_STATUS_NO_EMAIL.pick(rng, split, order=typed)),
        facts=[order.number],
    )
    dialogue.say(ASK_FOR_EMAIL.pick(rng, split, order=order.number))
    arguments = {"order_id": order.number, "email": order.email}
    dialogue.user(
        GIVE_EMAIL.pick(rng, split, email=order.email),
        tool="lookup_order",
        arguments=arguments,
        facts=_status_facts(order, values),
    )
    dialogue.call("lookup_order", arguments, order_view(order))
    dialogue.say(_reply_for(order, rng, split, angry=False))
    return dialogue


def order_missing_id(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    order = rng.choice(store.orders_in(entity_split(split)))
    values = _order_values(order)
    dialogue = Dialogue(split, "support", "order_missing_id", "widget")
    dialogue.user(join(maybe(rng, 0.4, GREETING, split), ASK_STATUS_NO_ID.pick(rng, split)))
    dialogue.say(ASK_FOR_ID.pick(rng, split))
    arguments = {"order_id": order.number, "email": order.email}
    dialogue.user(
        GIVE_BOTH.pick(rng, split, order=_typed_order_number(rng, order.number), email=order.email),
        tool="lookup_order",
        arguments=arguments,
        facts=_status_facts(order, values),
    )
    dialogue.call("lookup_order", arguments, order_view(order))
    dialogue.say(_reply_for(order, rng, split, angry=False))
    return dialogue


def order_not_found(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    """A mistyped number, or someone else's order: the tool says not found either way."""
    orders = store.orders_in(entity_split(split))
    order, other = rng.sample(orders, 2)
    if rng.random() < 0.5:
        number = order.number[:3] + str(rng.randint(100000, 999999))
        email = order.email
    else:  # another customer's order number with this customer's email
        number, email = other.number, order.email
    dialogue = Dialogue(split, "support", "order_not_found", "widget")
    arguments = {"order_id": number, "email": email}
    dialogue.user(
        join(
            maybe(rng, 0.3, GREETING, split), ASK_STATUS.pick(rng, split, order=number, email=email)
        ),
        tool="lookup_order",
        arguments=arguments,
        facts=[number, email],
    )
    dialogue.call("lookup_order", arguments, dict(NOT_FOUND))
    dialogue.say(NOT_FOUND_REPLY.pick(rng, split, order=number, email=email))
    return dialogue


def policy_question(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    topic = rng.choice(KB_TOPICS)
    article = next(a for a in store.articles if a.topic == topic)
    dialogue = Dialogue(split, "support", f"policy_{topic}", "widget")
    arguments = {"topic": topic}
    dialogue.user(
        join(maybe(rng, 0.3, GREETING, split), POLICY_QUESTION[topic].pick(rng, split)),
        tool="search_kb",
        arguments=arguments,
        facts=[article.answer],
    )
    dialogue.call("search_kb", arguments, kb_view(article))
    dialogue.say(POLICY_REPLY.pick(rng, split, answer=article.answer))
    if rng.random() < 0.25:
        dialogue.user(THANKS.pick(rng, split))
        dialogue.say(CLOSING.pick(rng, split))
    return dialogue


def order_problem(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    order = rng.choice([o for o in store.orders_in(entity_split(split)) if o.status != "cancelled"])
    category = rng.choice(tuple(PROBLEM))
    # Held-out tickets come from their own number range.
    low, high = (10000, 59999) if entity_split(split) == "train" else (60000, 99999)
    ticket = f"T-{rng.randint(low, high)}"
    dialogue = Dialogue(split, "support", f"ticket_{category}", "widget")
    arguments: dict[str, Any] = {"order_id": order.number, "category": category}
    dialogue.user(
        join(
            maybe(rng, 0.3, GREETING, split),
            PROBLEM[category].pick(
                rng, split, order=_typed_order_number(rng, order.number), email=order.email
            ),
        ),
        tool="create_ticket",
        arguments=arguments,
        facts=[ticket, order.number],
    )
    dialogue.call("create_ticket", arguments, ticket_view(ticket, category, order.number))
    dialogue.say(TICKET_REPLY.pick(rng, split, ticket=ticket, order=order.number))
    return dialogue


def handoff(rng: random.Random, store: ShopData, split: str) -> Dialogue:
    complaint = rng.random() < 0.35
    reason = "complaint" if complaint else "customer_request"
    dialogue = Dialogue(split, "support", f"handoff_{reason}", "widget")
    text = (COMPLAINT if complaint else HUMAN_REQUEST).pick(rng, split)
    arguments = {"reason": reason}
    dialogue.user(
        join(maybe(rng, 0.2, GREETING, split), text), tool="handoff_to_human", arguments=arguments
    )
    dialogue.call("handoff_to_human", arguments, handoff_view())
    dialogue.say(HANDOFF_REPLY.pick(rng, split))
    return dialogue


# Relative frequencies in the generated corpus.
GENERATORS: list[tuple[Callable[[random.Random, ShopData, str], Dialogue], int]] = [
    (order_status, 30),
    (order_missing_email, 8),
    (order_missing_id, 8),
    (order_not_found, 8),
    (policy_question, 22),
    (order_problem, 12),
    (handoff, 8),
]


# Training-only phrasings ----------------------------------------------------------------
# The first model mapped unseen wordings of these requests to the wrong tool (or none):
# more ways to say each thing, offered to the training split only. None repeats a held-out
# template, and candidates that mirrored a held-out one (or used a word only held-out
# phrasings use, such as "supervisor") were left out; the held-out dialogues are unchanged.
_EXTRA_TRAINING: list[tuple[Phrases, list[str]]] = [
    (
        ASK_STATUS,
        [
            "Where's order {order}? Email is {email}",
            "can u check {order} pls, {email}",
            "I placed order {order} with {email}, what's happening with it?",
            "{email} here. Status of {order}?",
            "Please check the status of {order} for me, my email is {email}.",
            "What's going on with my order {order}? {email}",
            "When is {order} arriving? My email: {email}",
            "Need an update on order {order} ({email}).",
            "look up order {order} email {email}",
            "Did {order} ship? It's under {email}.",
        ],
    ),
    (
        ASK_TRACKING,
        [
            "Give me the tracking code for {order}. {email}",
            "What carrier is shipping {order}? {email}",
            "Can you tell me how to follow {order}? Email {email}",
            "Where do I follow my package {order}? I'm {email}",
        ],
    ),
    (
        ASK_STATUS_NO_EMAIL,
        [
            "what's happening with {order}?",
            "Status of {order}?",
            "Did order {order} ship yet?",
            "Could you check {order} for me?",
            "When does {order} arrive?",
            "Where's {order}?",
        ],
    ),
    (
        ASK_STATUS_NO_ID,
        [
            "My order hasn't come yet.",
            "Is my order on its way?",
            "I'm still waiting for my order.",
            "Can you tell me when my package comes?",
            "my parcel hasn't arrived",
        ],
    ),
    (
        FOLLOW_ETA,
        [
            "when does it come?",
            "and when will I have it?",
            "What's the expected delivery?",
            "arrival date?",
            "how soon will it be here?",
            "When is it supposed to arrive?",
        ],
    ),
    (
        FOLLOW_ITEMS,
        [
            "What did I buy?",
            "which things were in that order?",
            "list what I ordered please",
            "What products did I get?",
            "what does it contain?",
        ],
    ),
    (
        FOLLOW_TOTAL,
        [
            "what did it cost?",
            "how much was the order?",
            "the total?",
            "price of the order?",
            "what was I charged?",
        ],
    ),
    (
        HUMAN_REQUEST,
        [
            "real person please",
            "I want a human, not a bot.",
            "Can someone from your team help me?",
            "connect me to an agent",
            "Let me speak to customer service.",
            "I need to talk to someone.",
        ],
    ),
    (
        COMPLAINT,
        [
            "I want to complain to someone in charge.",
            "I want a manager, now.",
            "I'd like to make a complaint to a real person.",
            "This is unacceptable, escalate it to a manager.",
        ],
    ),
]
_EXTRA_POLICY: dict[str, list[str]] = {
    "shipping": [
        "How long does delivery take?",
        "what does shipping cost",
        "Is there free shipping?",
        "How quickly will my order ship?",
        "shipping time?",
    ],
    "returns": [
        "Can I send an item back?",
        "how can I return my order",
        "What's the return window?",
        "returns?",
        "I'd like to return a jacket.",
    ],
    "refunds": [
        "How long until I get my money back?",
        "When will my refund arrive?",
        "How do I get a refund?",
        "Where does the refund go?",
    ],
    "exchanges": [
        "Can I swap an item for another size?",
        "I need to exchange something.",
        "Can I exchange my boots?",
        "These are too small, can I get a different size?",
    ],
    "warranty": [
        "Is there a warranty on your products?",
        "My backpack strap ripped, can you fix it?",
        "warranty?",
        "Something broke after a few weeks.",
    ],
    "payment": [
        "Which payment methods can I use?",
        "Do you take Visa?",
        "Can I pay by card?",
        "When do you charge my card?",
    ],
    "account": [
        "I can't sign in.",
        "How do I update my account details?",
        "password reset?",
        "How do I change my shipping address?",
    ],
    "cancellation": [
        "Can I still cancel my order?",
        "I'd like to cancel my purchase.",
        "how to cancel an order",
        "cancel?",
        "Can you stop my order?",
    ],
    "international": [
        "Do you ship outside the US?",
        "Can I get delivery to Spain?",
        "Do you ship worldwide?",
        "shipping to Canada?",
        "Are there customs fees?",
    ],
    "contact": [
        "What are your opening hours?",
        "How do I get in touch with you?",
        "Is support open on Sunday?",
        "when are you available?",
        "customer service hours?",
    ],
}
_EXTRA_PROBLEM: dict[str, list[str]] = {
    "damaged": [
        "My order {order} came broken. {email}",
        "The stuff in order {order} arrived ruined ({email}).",
    ],
    "wrong_item": [
        "Wrong item in my order {order}. Email {email}",
        "You sent the wrong product for {order}, {email}",
    ],
    "missing_item": [
        "Something is missing from {order}. {email}",
        "My order {order} is incomplete, email {email}",
        "{order} came without one of the items. {email}",
    ],
    "billing": [
        "Wrong amount charged for order {order}, {email}",
        "{order} was billed twice! Email {email}",
    ],
}


# A second, larger round of training-only phrasings: short and long, texting style and
# formal, British and American wording, the key fact first or last. Held out as above.
_MORE_TRAINING: list[tuple[Phrases, list[str]]] = [
    (
        GREETING,
        [
            "hey,",
            "Hi!",
            "Hullo,",
            "Morning,",
            "hiya!",
            "Good afternoon,",
            "hey hey,",
            "Hi again,",
            "Hello hello,",
            "heyy,",
            "Evening,",
            "Hi team,",
            "hi hi,",
            "Hey!",
            "Dear support,",
            "Hello team,",
            "howdy,",
            "Hi folks,",
            "Hello again,",
            "Heya,",
            "Hi, hope you're well,",
            "Hello, good day,",
        ],
    ),
    (
        ANGRY,
        [
            "This is a joke.",
            "I'm so fed up with this.",
            "Absolutely ridiculous!",
            "I'm furious right now.",
            "Why does nothing work?!",
            "Really not impressed.",
            "This is taking way too long.",
            "so annoyed rn",
            "I've had enough of waiting.",
            "Terrible, just terrible.",
            "I'm losing my patience.",
            "come on, this is beyond slow",
            "So disappointing.",
            "What a mess.",
            "Not ok at all.",
            "I can't believe this.",
            "Still nothing?!",
            "what a shambles",
            "I'm getting really angry now.",
            "Seriously?!",
            "I'm sick of this.",
            "Awful experience so far.",
        ],
    ),
    (
        THANKS,
        [
            "thank u",
            "ty",
            "thanks!!",
            "brilliant, thank you",
            "awesome thanks",
            "thanks heaps",
            "cheers mate",
            "thanks for your help",
            "lovely, thanks",
            "great thank you so much",
            "thank you very much",
            "sweet thanks",
            "nice one, thanks",
            "thanks a bunch",
            "super, thx",
            "ta",
            "that's great, thanks",
            "thanks, that helps",
            "Thank you kindly.",
            "many thanks",
            "thanks so much for that",
            "thx a lot",
        ],
    ),
    (
        ASK_STATUS,
        [
            "hi can u tell me where {order} is, email {email}",
            "where is {order}?? email {email}",
            "I was wondering whether order {order} has been sent yet, my email is {email}",
            "{email} - is order {order} on its way?",
            "my order {order} still hasnt arrived, {email}",
            "could you please tell me the status of {order}? the email is {email}",
            "when will {order} get here? I ordered it with {email}",
            "What's the latest on {order}? Email address {email}.",
            "I ordered with {email}, order number {order}, where is it please",
            "has {order} been dispatched? my email is {email}",
            "Can you see where my parcel {order} is? I used {email}.",
            "I'd like to know when {order} will arrive. My email is {email}.",
            "still waiting for {order}, email {email}, any news",
            "{order} hasn't turned up yet, my email is {email}",
            "pls check order {order} email {email}",
            "Is my order {order} coming soon? {email}",
            "what's the status of my order please, it's {order} and my email is {email}",
            "I'm {email}, could you check where {order} is?",
            "hey whats up with {order}? {email}",
            "Would you mind checking order {order}? It was placed with {email}.",
            "where's my parcel {order}, I ordered as {email}",
        ],
    ),
    (
        ASK_TRACKING,
        [
            "{order} tracking no? {email}",
            "can u send me the tracking for {order}? email {email}",
            "I'd like to track my parcel {order}, my email is {email}",
            "{email} - which courier is bringing {order}?",
            "What's the tracking code on order {order}? I'm {email}.",
            "how can I follow my delivery {order}? email {email}",
            "Could I have the tracking number for order {order}? The email is {email}.",
            "who's the carrier for {order}? {email}",
            "I need to track {order}, email {email}",
            "is there a tracking link for {order}? my email's {email}",
            "need tracking on {order}, I'm {email}",
            "my email is {email}, what's the tracking number on {order}?",
            "which delivery company has {order}? I used {email}",
            "can I track {order}? email {email}",
            "where's the tracking for {order}? {email}",
            "could you find the courier for {order}? email {email}",
            "what courier is {order} with? email is {email}",
            "where do I track order {order}, email {email}",
            "got a tracking number for {order}? {email}",
            "How can I track order {order}? It's under {email}.",
        ],
    ),
    (
        ASK_STATUS_NO_EMAIL,
        [
            "where's my order {order}",
            "can u check {order} pls",
            "has order {order} been sent?",
            "{order} - where's it got to?",
            "{order} where is it?",
            "I'm still waiting on {order}",
            "what's the status of order {order} please",
            "Could you tell me where order {order} is?",
            "is {order} on the way?",
            "when will {order} get here?",
            "order {order} hasnt arrived",
            "can you find {order} for me",
            "has my order {order} been dispatched?",
            "check order {order}",
            "I was wondering where {order} is",
            "what's up with my order {order}?",
            "Can you see if {order} has shipped?",
            "hi, order number {order}, where is it?",
            "{order} status pls",
            "is my order {order} coming today?",
            "My order {order} still hasn't come.",
            "Please check on {order}.",
        ],
    ),
    (
        ASK_STATUS_NO_ID,
        [
            "my things haven't arrived",
            "my order hasnt arrived",
            "can u check my order",
            "I'm waiting for a package, where is it?",
            "has my parcel been sent?",
            "I'd like to know the status of my order.",
            "is my order delayed?",
            "my delivery hasn't turned up",
            "Can you tell me where my order is?",
            "is my order coming soon?",
            "I ordered something and it hasn't come",
            "where is my parcel??",
            "I was wondering whether my order has shipped",
            "any update on my order?",
            "order status please",
            "my package still hasnt come",
            "Could you look up my order?",
            "I haven't got my order",
            "what's happening with my order?",
            "has my stuff been dispatched yet?",
            "I need to know where my order is.",
            "still no sign of my package",
        ],
    ),
    (
        GIVE_EMAIL,
        [
            "{email} thx",
            "it's {email}",
            "it's registered to {email}",
            "the email I used is {email}",
            "yes, {email}",
            "my email's {email}",
            "ok, {email}",
            "{email} is my email",
            "I ordered with {email}",
            "use {email}",
            "That would be {email}.",
            "{email} pls",
            "here: {email}",
            "my address is {email}",
            "the one I use is {email}",
            "yep {email}",
            "I'm {email}",
            "it was placed with {email}",
            "the account is {email}",
            "{email}, thanks",
            "Sure, it's {email}.",
            "it's under {email}",
        ],
    ),
    (
        GIVE_BOTH,
        [
            "order {order} and email {email}",
            "{order}, ordered by {email}",
            "ok so {order} and {email}",
            "sure, order {order}, {email}",
            "the number is {order} and my email is {email}",
            "{email} and {order}",
            "{order} email {email}",
            "order no {order}, email {email}",
            "my email is {email}, order {order}",
            "here are my details: {order}, {email}",
            "{order} under {email}",
            "Order number: {order}. Email: {email}.",
            "it's order {order}, placed with {email}",
            "{email} order {order}",
            "here you go, {order} and {email}",
            "the order's {order}, email's {email}",
            "{order} with email {email}",
            "yes, {order}, my email's {email}",
            "order {order} for {email}",
            "I'm {email}, the order is {order}",
            "{order} and the email is {email}",
            "Sure. {order}, {email}.",
        ],
    ),
    (
        FOLLOW_ETA,
        [
            "when's it coming?",
            "so when do I get it?",
            "when will it be here?",
            "how long till it gets here?",
            "and when does it arrive?",
            "when is delivery?",
            "expected arrival?",
            "when can I expect it?",
            "what's the arrival date?",
            "when should it turn up?",
            "how much longer will it take?",
            "when is it arriving?",
            "ok when will it arrive then",
            "when is it due to arrive?",
            "any idea when it'll come?",
            "when does it land?",
            "when will it get to me?",
            "so when will it come",
            "estimated delivery?",
            "when roughly will I get it?",
            "how soon can I get it?",
            "arriving when?",
        ],
    ),
    (
        FOLLOW_ITEMS,
        [
            "what's in that order?",
            "what did I buy again?",
            "which items were in it?",
            "can you tell me what's in it?",
            "what items did I order?",
            "what did I get in that one?",
            "which bits did I get?",
            "remind me what's in that order",
            "what products are in it?",
            "list the items please",
            "what did that order have in it?",
            "which things did I order?",
            "what was I buying again?",
            "what items are included?",
            "can u list what I ordered",
            "what's the order for?",
            "which products did I buy?",
            "tell me what I ordered",
            "and the items?",
            "what exactly did I order?",
            "what stuff was in that order?",
            "show me the items",
        ],
    ),
    (
        FOLLOW_TOTAL,
        [
            "how much did it cost?",
            "what did I pay?",
            "how much money was it?",
            "what was the order total?",
            "how much was that?",
            "what was the cost?",
            "how much did that come to?",
            "what's the grand total?",
            "what did it set me back?",
            "how much was the total?",
            "can you tell me the total?",
            "how pricey was it?",
            "how much did u charge me?",
            "and how much was it?",
            "what's the total for that?",
            "cost?",
            "how much have I paid?",
            "what did the order come to?",
            "how much was I billed?",
            "remind me how much it was",
            "what was the amount?",
            "how much did the order cost me?",
        ],
    ),
    (
        HUMAN_REQUEST,
        [
            "pls let me chat to a person",
            "I'd like to speak to a human please.",
            "human agent",
            "get me a real person",
            "Can you transfer me to someone from your team?",
            "I want to chat with a person, not a bot",
            "speak to agent",
            "put me through to a human",
            "I need to speak to a member of staff.",
            "can I have a real agent",
            "talk to a human please",
            "Could you connect me to a live person?",
            "I want customer service, a real person",
            "let me talk to a human being",
            "live agent please",
            "Please get a staff member on here.",
            "I don't want a bot, get me a human",
            "pls transfer me to an agent",
            "I need a real person to help me.",
            "transfer to support staff please",
            "operator please",
            "I'd like a human to help me.",
        ],
    ),
    (
        COMPLAINT,
        [
            "I want to make a complaint, get me a manager.",
            "This is appalling, I want to complain to someone senior.",
            "I'm really angry and I want to file a complaint with a manager.",
            "your service is terrible, I want to speak to someone in charge",
            "I've had enough, put me through to a manager to complain",
            "I want to lodge a formal complaint with a person.",
            "Nobody has fixed this, I want your manager.",
            "this is a disgrace, I need to complain to a human",
            "Let me speak to a manager, I have a complaint.",
            "I want to complain about how I've been treated, connect me to a manager.",
            "get me whoever is in charge, I want to complain",
            "I'm fuming, I want to raise a complaint with your team.",
            "This bot keeps failing me, I want a manager now.",
            "I want to escalate my complaint to a real person.",
            "complaint. manager. now.",
            "I'm very unhappy and want to complain to a person in charge.",
            "Put a manager on, this has gone on too long.",
            "I need to make a complaint about your service to a human.",
            "Escalate this to your manager please, I'm complaining.",
            "You've wasted my time, I want to speak to the manager.",
        ],
    ),
]
_MORE_POLICY: dict[str, list[str]] = {
    "shipping": [
        "how long does delivery usually take",
        "whats the shipping cost",
        "do u do free shipping?",
        "How much do you charge for delivery?",
        "is there next day delivery?",
        "how quick is your shipping?",
        "What are the delivery options?",
        "Do I have to pay for postage?",
        "how long will shipping take?",
        "can I get faster delivery?",
        "is delivery free over a certain amount?",
        "I was wondering how long shipping normally takes",
        "standard delivery time?",
        "How soon do orders ship?",
        "do you charge for shipping?",
        "what does express delivery cost?",
        "shipping fees?",
        "how long to ship",
        "How fast is delivery?",
        "Is postage free?",
    ],
    "returns": [
        "how do i send something back",
        "can i return this",
        "What's your returns policy?",
        "Are returns free?",
        "I'd like to return an item, how does that work?",
        "is there a returns label?",
        "do I have to pay to return stuff?",
        "can u tell me how to return my order",
        "What do I need to do to return something?",
        "I want to return my boots.",
        "is it possible to return an item I bought?",
        "can I return a gift?",
        "return an item",
        "Can I return something I've used?",
        "I need to send back a jacket, how?",
        "do you take returns on sale items?",
        "How can I start a return?",
        "where do I send returns?",
        "returning an item?",
        "I'd like to send my order back.",
    ],
    "refunds": [
        "when will i get my money back",
        "how long does a refund take",
        "Where's my refund?",
        "refund?",
        "How will I be refunded?",
        "I sent my item back, when do I get refunded?",
        "Do refunds go back on my card?",
        "how does the refund process work",
        "how many days until the refund shows up?",
        "When do you issue refunds?",
        "still waiting on my refund, how long does it take?",
        "Can I get my money back?",
        "how are refunds processed?",
        "Will my refund go to the original payment method?",
        "when does the refund come through?",
        "I want a refund, how does it work?",
        "How quickly do you refund?",
        "has my refund been sent?",
        "is my refund on the way?",
        "Does the refund include shipping?",
    ],
    "exchanges": [
        "can i swap for a different size",
        "I'd like to exchange my jacket",
        "How can I exchange an item?",
        "can I change the size of something I bought?",
        "do u do swaps?",
        "these boots are too big, can I exchange them?",
        "I need a different colour, can I exchange it?",
        "how do i do an exchange",
        "Is it possible to exchange a product?",
        "Can I trade this in for a larger size?",
        "exchange for another size?",
        "What's the process for exchanges?",
        "I ordered the wrong size, can I swap it for another?",
        "can I exchange something instead of returning it?",
        "How do I swap an item?",
        "how does swapping work?",
        "can I get the next size down?",
        "Can I exchange my shoes for a different colour?",
        "do exchanges cost anything?",
        "swap sizes please, how?",
    ],
    "warranty": [
        "is there a warranty",
        "whats covered by the warranty?",
        "My boots fell apart after a few weeks, is that covered?",
        "does my jacket have a warranty?",
        "are your products covered against defects?",
        "The stitching came undone, can you repair it?",
        "do u cover defects?",
        "What's your warranty policy?",
        "my backpack zip broke, is it under warranty?",
        "Is a faulty product covered?",
        "warranty claim?",
        "the strap snapped after a month of use, what can I do?",
        "My stove stopped working, is it still under warranty?",
        "How do I make a warranty claim?",
        "does the warranty cover wear and tear?",
        "Something I bought from you is faulty.",
        "is my tent still under warranty?",
        "do you repair broken gear?",
        "how long does the warranty last?",
        "My jacket's seams split after a few uses.",
    ],
    "payment": [
        "how do i pay",
        "do u take paypal",
        "Can I pay with Apple Pay?",
        "Which payment methods are available?",
        "Do you accept debit cards?",
        "Can I pay by credit card?",
        "when will my card be charged?",
        "what ways can I pay?",
        "Do you take Visa cards?",
        "can I pay later?",
        "is PayPal an option?",
        "Can I split the payment?",
        "Is bank transfer an option?",
        "do you take gift cards?",
        "When do you take the payment?",
        "How can I pay for my order?",
        "how can I pay for stuff",
        "Do you charge my card when I order or when it ships?",
        "can i use my debit card",
        "What forms of payment do you accept?",
    ],
    "account": [
        "i cant log in",
        "forgot my password",
        "how do i reset my password",
        "How do I change my email address?",
        "I can't get into my account.",
        "how to change my delivery address",
        "my login isn't working",
        "How can I update my details?",
        "I need to reset my password.",
        "can't sign into my account",
        "where do I update the email on my profile?",
        "password help",
        "Where can I edit my address?",
        "I forgot my login details.",
        "how do I update my account?",
        "my password doesn't work",
        "How do I change my account password?",
        "Can I change my address in my account?",
        "my password reset email never came",
        "login not working",
    ],
    "cancellation": [
        "can i cancel",
        "I want to cancel my order",
        "how do I cancel my purchase?",
        "is it still possible to cancel?",
        "I'd like to cancel what I bought",
        "can u cancel my order",
        "Can I cancel an order that has shipped?",
        "How late can I cancel an order?",
        "stop my order please, I want to cancel",
        "I ordered by mistake, can I cancel?",
        "Can I still stop my order?",
        "I need to cancel my order.",
        "what's your cancellation policy?",
        "How do cancellations work?",
        "can orders be cancelled?",
        "is there a way to cancel?",
        "I'd like to cancel my purchase please.",
        "cancellation?",
        "Can I cancel before it ships?",
        "how can i cancel my order",
    ],
    "international": [
        "do u ship overseas",
        "Do you deliver internationally?",
        "can I order from abroad?",
        "Do you ship to other countries?",
        "do I pay import fees?",
        "Will I have to pay customs?",
        "how long does shipping abroad take?",
        "Do you deliver outside the country?",
        "do you have global shipping?",
        "Can you ship to New Zealand?",
        "do you send orders to Ireland?",
        "Do you ship to Mexico?",
        "what are the international shipping costs?",
        "Can I get my order delivered overseas?",
        "are there import duties?",
        "Do you post to Europe?",
        "do you do worldwide shipping",
        "shipping overseas?",
        "Do you deliver to Japan?",
        "What does it cost to ship overseas?",
    ],
    "contact": [
        "how do i contact you",
        "what are your hours",
        "Do you have a phone line?",
        "When is customer service open?",
        "what's your phone number?",
        "How can I get in touch with support?",
        "Are you open on Saturdays?",
        "What time does support close?",
        "is there a number I can call?",
        "how can I reach you?",
        "opening hours?",
        "Do you have an email address for support?",
        "when are you open?",
        "Is there a way to call you?",
        "what time do you open?",
        "how do I get hold of you",
        "How do I reach your support team?",
        "support opening times?",
        "are you open at the weekend?",
        "what are your customer service hours",
    ],
}
_MORE_PROBLEM: dict[str, list[str]] = {
    "damaged": [
        "broken item in {order}!! {email}",
        "my stuff from {order} is damaged. {email}",
        "the jacket in order {order} is ripped. I'm {email}",
        "{email} - order {order} came smashed",
        "{order} got wrecked in transit, {email}",
        "The item from {order} is cracked. Email {email}.",
        "my parcel {order} arrived soaked and ruined, {email}",
        "order {order} is damaged!! {email}",
        "I received {order} and it's broken. My email is {email}.",
        "the boots in {order} came damaged ({email})",
        "{order} came in pieces, email {email}",
        "damaged item in order {order}, {email}",
        "my order {order} was damaged in the post. {email}",
        "The lantern from order {order} arrived shattered. {email}",
        "{email}: the stove in {order} is dented",
        "my order {order} came with a broken strap, email {email}",
        "Order {order} was damaged when it arrived, I'm {email}.",
        "the box for {order} was crushed and the item is broken, {email}",
        "I'm {email}, my order {order} has a tear in it",
        "everything in {order} is scratched, email is {email}",
    ],
    "wrong_item": [
        "wrong item in {order}, email {email}",
        "you sent the wrong size in order {order}. {email}",
        "{order} is not what I picked, {email}",
        "{email} - got the wrong product in {order}",
        "I ordered a jacket but {order} had a hat in it. {email}",
        "Order {order} came in the wrong colour. Email {email}.",
        "hi, {order} is the wrong item, {email}",
        "The shoes in {order} are the wrong size. {email}",
        "my order {order} has someone else's item in it, email {email}",
        "{order} has totally the wrong product ({email})",
        "you sent the wrong style for order {order}, {email}",
        "I'm {email}, order {order} came with the wrong product",
        "wrong size in my order {order}, email is {email}",
        "Order {order}: wrong item delivered. {email}",
        "the item in order {order} doesn't match what I bought. {email}",
        "{order} contained a different product, I'm {email}",
        "got a different item than I ordered in {order}, email {email}",
        "my order {order} is wrong, {email}",
        "You mixed up order {order}, wrong item. Email {email}.",
        "I received the wrong model in {order}. {email}",
    ],
    "missing_item": [
        "order {order} is missing an item, email {email}",
        "something's missing from {order}. {email}",
        "{email} - order {order} is missing stuff",
        "my order {order} came with an item missing, {email}",
        "no gloves in my order {order}, {email}",
        "hi, {order} is incomplete, my email is {email}",
        "I only got part of {order}. {email}",
        "one item from {order} never came ({email})",
        "Order {order} is short an item. {email}",
        "{order} arrived but the hat is missing, email {email}",
        "I'm {email} and something is missing from order {order}",
        "missing items in {order}, {email}",
        "my parcel {order} didn't have everything, email is {email}",
        "Order {order}: one product is missing. My email is {email}.",
        "I paid for more than what came in {order}. {email}",
        "the jacket was left out of order {order}, {email}",
        "some of my order {order} is missing, email {email}",
        "{order} only had some of the items. I'm {email}.",
        "one thing is missing in order {order} ({email})",
        "the box for {order} was missing the socks, email {email}",
    ],
    "billing": [
        "i was charged twice for {order}, email {email}",
        "order {order} was double charged. {email}",
        "{email} - you charged me twice for order {order}",
        "my card was billed two times for {order}, {email}",
        "you took too much money for {order}. My email is {email}.",
        "the charge for order {order} is too high, email {email}",
        "hi, {order} charged me the wrong amount, {email}",
        "Order {order}: I paid more than the price. Email {email}.",
        "double payment taken for {order} ({email})",
        "I'm {email} and I was billed twice for order {order}",
        "wrong amount charged on {order}. {email}",
        "my bank shows two charges for {order}, email is {email}",
        "you took payment twice for order {order}, {email}",
        "there's a duplicate charge for {order}. {email}",
        "the total charged for order {order} is off, email {email}",
        "the amount taken for {order} is wrong. I'm {email}.",
        "charged twice for my order {order}!! {email}",
        "Order {order} cost more than it should have. Email {email}.",
        "my card statement for {order} shows a wrong charge, {email}",
        "why was I charged twice for {order}? {email}",
    ],
}


def _add_training_phrasings() -> None:
    add_training(_EXTRA_TRAINING + _MORE_TRAINING)
    for topic, extra in _EXTRA_POLICY.items():
        POLICY_QUESTION[topic].add_training(extra + _MORE_POLICY[topic])
    for category, extra in _EXTRA_PROBLEM.items():
        PROBLEM[category].add_training(extra + _MORE_PROBLEM[category])


_add_training_phrasings()
