"""Who is who on each platform, behind one port: each integration registers an ``Identity`` that answers for its
platform, and the ``Directory`` asks them.

An identity says which of its user ids are customer contacts rather than staff, where a staff member is reached
(their account on it, or the staff id itself for a terminal), whether it can message customers on a rep's behalf,
and under which spreadsheet headers its accounts are imported. Accounts themselves are rows of ``staff_account``
(one per staff member and platform), so looking up a sender is the same query on every platform.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from models.people import ContactTransfer
from models.staff import Staff, StaffAccount

# Moves customer contacts from one staff account to another on a platform and follows each move: given the open
# transfers and whether their holder has left the platform, it asks or polls the platform and sets each one's
# ``status`` and ``reason`` (and ``attempts``) in place; the caller saves them.
ContactMover = Callable[[Sequence[ContactTransfer], bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ContactCard:
    """What a platform tells of a customer contact, as the staff member who added them noted it."""

    name: str
    company: str = ""  # the company the staff member noted, else the one the contact states
    remark: str = ""  # the staff member's name for them
    phones: tuple[str, ...] = ()


# (contact id, the staff member's account) → the contact's card (None: the platform does not know them).
DescribeContact = Callable[[str, str], Awaitable[ContactCard | None]]


@dataclass
class Identity:
    """One platform's answers about people. The defaults fit a platform whose people have accounts."""

    platform: str
    # Spreadsheet headers (Chinese and English) of the column holding this platform's account, the first one
    # being the label shown to people; empty: accounts are not imported from spreadsheets.
    account_headers: tuple[str, ...] = ()
    # Customer contacts' user ids start with one of these (they are not staff).
    external_prefixes: tuple[str, ...] = ()
    # Said when an imported contact id is not one of this platform's customer contacts.
    external_hint: str = ""
    # The platform delivers text to customer contacts on a rep's behalf (the rep's account sends it), after the rep
    # confirms it as ``confirm_hint`` says.
    messages_customers: bool = False
    confirm_hint: str = ""
    # The platform's name as people know it.
    label: str = ""
    # Reaches every staff member (by staff id): where pushes wait when no other platform reaches someone.
    fallback: bool = False
    # Demo data (``crmbot demo``) gives each demo member the account ``demo_prefix + login`` here (None: none).
    demo_prefix: str | None = None
    # Moves customer contacts between staff accounts (None: the platform cannot).
    move_contacts: ContactMover | None = None
    # Tells who a customer contact is (None: the platform cannot).
    describe_contact: DescribeContact | None = None

    def own_staff_id(self, user_id: str) -> int | None:
        """The staff id when this platform's user ids are staff ids; None: look the account up."""
        return None

    def recipient(self, staff_id: int, account: str | None) -> str | None:
        """Where this platform reaches a staff member with ``account`` on it (None: it does not)."""
        return account

    def is_external(self, user_id: str) -> bool:
        return bool(self.external_prefixes) and user_id.startswith(self.external_prefixes)

    @property
    def account_label(self) -> str:
        return self.account_headers[0] if self.account_headers else self.platform


@dataclass(frozen=True, slots=True)
class CustomerRoute:
    """A customer contact reached through ``identity``'s platform, sent from the rep's account ``sender``."""

    identity: Identity
    sender: str


@dataclass
class Directory:
    """Every registered platform's identity, in registration order."""

    identities: list[Identity] = field(default_factory=list)
    # By platform: looked up for every message archived or handled.
    _by_platform: dict[str, Identity] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_platform.update((i.platform, i) for i in self.identities)

    def register(self, identity: Identity) -> None:
        if self.get(identity.platform) is not None:
            raise ValueError(f"platform {identity.platform!r} registered twice")
        self.identities.append(identity)
        self._by_platform[identity.platform] = identity

    def get(self, platform: str) -> Identity | None:
        return self._by_platform.get(platform)

    def is_external(self, platform: str, user_id: str) -> bool:
        """A customer contact (not staff) on ``platform``."""
        identity = self.get(platform)
        return identity is not None and identity.is_external(user_id)

    def is_any_external(self, user_id: str) -> bool:
        """A customer contact on some platform (for ids stored without their platform, e.g. a contact's)."""
        return any(i.is_external(user_id) for i in self.identities)

    def external_hint(self) -> str:
        return "或".join(i.external_hint for i in self.identities if i.external_hint)

    async def customer_route(self, staff_id: int, contact_id: str) -> CustomerRoute | None:
        """How a text reaches the customer contact ``contact_id`` from staff member ``staff_id``, if some platform
        can deliver it on their behalf."""
        accounts = await accounts_of(staff_id)
        for identity in self.identities:
            if not (identity.messages_customers and identity.is_external(contact_id)):
                continue
            if (recipient := identity.recipient(staff_id, accounts.get(identity.platform))) is not None:
                return CustomerRoute(identity, recipient)
        return None

    def importable(self) -> list[Identity]:
        """The platforms whose accounts come from spreadsheet columns."""
        return [i for i in self.identities if i.account_headers]

    async def staff_ids(
        self, platform: str, user_ids: Collection[str], conn: BaseDBAsyncClient | None = None
    ) -> dict[str, int]:
        """Active staff members among these platform users: user id → staff id."""
        identity = self.get(platform)
        wanted = {u for u in user_ids if u}
        if identity is None or not wanted:
            return {}
        direct = {u: sid for u in wanted if (sid := identity.own_staff_id(u)) is not None}
        found: dict[str, int] = {}
        if direct:
            active = (
                await Staff.filter(id__in=list(direct.values()), active=True)
                .using_db(conn)
                .values_list("id", flat=True)
            )
            live = {int(str(i)) for i in active}
            found.update((u, sid) for u, sid in direct.items() if sid in live)
        rest = wanted - set(direct)
        if rest:
            pairs = (
                await StaffAccount.filter(platform=platform, user_id__in=list(rest), staff__active=True)
                .using_db(conn)
                .values_list("user_id", "staff_id")
            )
            found.update((str(u), int(str(s))) for u, s in pairs)
        return found


async def accounts_of(staff_id: int, conn: BaseDBAsyncClient | None = None) -> dict[str, str]:
    """A staff member's accounts: platform → user id."""
    rows = await StaffAccount.filter(staff_id=staff_id).using_db(conn).values_list("platform", "user_id")
    return {str(p): str(u) for p, u in rows}


async def accounts_by_staff(
    staff_ids: Iterable[int], conn: BaseDBAsyncClient | None = None
) -> dict[int, dict[str, str]]:
    """Several staff members' accounts at once: staff id → (platform → user id)."""
    wanted = list({s for s in staff_ids})
    out: dict[int, dict[str, str]] = {s: {} for s in wanted}
    if wanted:
        rows = (
            await StaffAccount.filter(staff_id__in=wanted).using_db(conn).values_list("staff_id", "platform", "user_id")
        )
        for sid, platform, user in rows:
            out[int(str(sid))][str(platform)] = str(user)
    return out


async def find_staff(key: str, *, active: bool = True) -> Staff | None:
    """The staff member called ``key``, else the one whose account on some platform is ``key``."""
    key = key.strip()
    if not key:
        return None
    query = Staff.filter(active=True) if active else Staff.all()
    return await query.filter(name=key).first() or await query.filter(accounts__user_id=key).order_by("id").first()


async def find_staff_among(keys: Collection[str]) -> list[Staff]:
    """The active staff members named, or holding an account, among ``keys`` (in id order, each once)."""
    if not keys:
        return []
    found = await Staff.filter(Q(name__in=list(keys)) | Q(accounts__user_id__in=list(keys)), active=True).order_by("id")
    unique: dict[int, Staff] = {}
    for staff in found:
        unique.setdefault(staff.id, staff)
    return list(unique.values())


async def link_account(staff: Staff, platform: str, user_id: str, conn: BaseDBAsyncClient | None = None) -> None:
    """Give ``staff`` the account ``user_id`` on ``platform`` (replacing their previous one there)."""
    await StaffAccount.filter(staff_id=staff.id, platform=platform).using_db(conn).delete()
    await StaffAccount.create(staff_id=staff.id, platform=platform, user_id=user_id, using_db=conn)
