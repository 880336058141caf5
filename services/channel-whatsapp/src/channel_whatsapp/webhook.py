"""The WhatsApp Cloud API webhook payload, as Meta documents it (only what Hilo reads).

Unknown extra fields are allowed (Meta adds fields over time); missing required ones are not.
Since 2026 a user may hide their number behind a username: Meta then withholds the `wa_id`
(`from`, `recipient_id`) and names them by their business-scoped user id (BSUID: `user_id`,
`from_user_id`, `recipient_user_id`), which it sends for every user.
Only `messages` and `user_preferences` changes are read; the other fields an app may subscribe
to (template status, quality and account updates) carry no customer interaction and are only
counted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)


class Profile(_Meta):
    name: str | None = None


class Contact(_Meta):
    wa_id: str | None = Field(default=None, description="Withheld for a user with a username.")
    user_id: str | None = Field(default=None, description="The business-scoped user id (BSUID).")
    profile: Profile | None = None


class Text(_Meta):
    body: str


class Media(_Meta):
    id: str
    mime_type: str | None = None
    caption: str | None = None
    filename: str | None = None


class Location(_Meta):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class Reply(_Meta):
    id: str
    title: str


class Interactive(_Meta):
    type: str
    button_reply: Reply | None = None
    list_reply: Reply | None = None


class Button(_Meta):
    payload: str | None = None
    text: str


class Reaction(_Meta):
    message_id: str
    emoji: str | None = None


class Context(_Meta):
    id: str | None = None


class System(_Meta):
    """A `system` message: a changed number, or a changed marketing preference."""

    type: str | None = None
    marketing: str | None = Field(
        default=None, description="On `user_preference_changed`: `stop` or `resume`."
    )


class Message(_Meta):
    from_: str | None = Field(
        default=None, alias="from", description="The sender's wa_id; withheld for a username."
    )
    from_user_id: str | None = Field(default=None, description="The sender's BSUID.")
    group_id: str | None = Field(
        default=None, description="Set on a message in a group (Groups API): `from` is a member."
    )
    id: str
    timestamp: str
    type: str
    text: Text | None = None
    image: Media | None = None
    audio: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    interactive: Interactive | None = None
    button: Button | None = None
    reaction: Reaction | None = None
    system: System | None = None
    context: Context | None = None
    referral: Any = None
    """On the first message after a click on a click-to-WhatsApp ad or post: `source_url`,
    `source_id`, `source_type` (`ad`, `post`), `headline`, `body`, the media, `ctwa_clid`. Any
    shape: one that is not an object is ignored, never a refusal."""


class StatusError(_Meta):
    code: int
    title: str | None = None


class Status(_Meta):
    id: str
    status: str = Field(
        description="`sent`, `delivered`, `read`, `failed`, `deleted`, or one Meta adds later "
        "(acknowledged and counted as ignored, not a reason to refuse the notification)."
    )
    timestamp: str
    recipient_id: str | None = Field(default=None, description="Withheld for a username.")
    recipient_user_id: str | None = Field(default=None, description="The recipient's BSUID.")
    recipient_type: str | None = Field(
        default=None,
        description="`group` for a message sent to a group: `recipient_id` is the "
        "group's id, no person's.",
    )
    errors: list[StatusError] = Field(default_factory=list)
    biz_opaque_callback_data: str | None = Field(
        default=None,
        description="What the sender gave the message to echo (`hilo.outbound.COMMAND_TAG`).",
    )


class Metadata(_Meta):
    display_phone_number: str
    phone_number_id: str


class Value(_Meta):
    messaging_product: Literal["whatsapp"]
    metadata: Metadata
    contacts: list[Contact] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    statuses: list[Status] = Field(default_factory=list)


class MessagesChange(_Meta):
    """`field: messages`: inbound messages and statuses of sent ones."""

    field: Literal["messages"]
    value: Value


class UserPreference(_Meta):
    """A user stopped or resumed the business's marketing messages (WhatsApp's "Offers and
    announcements" setting)."""

    wa_id: str | None = None
    user_id: str | None = None
    category: str
    value: str = Field(description="`stop` or `resume`.")
    timestamp: int | str | None = None


class PreferencesValue(_Meta):
    messaging_product: Literal["whatsapp"]
    metadata: Metadata
    user_preferences: list[UserPreference] = Field(default_factory=list)


class PreferencesChange(_Meta):
    """`field: user_preferences`: marketing messages stopped or resumed."""

    field: Literal["user_preferences"]
    value: PreferencesValue


class OtherChange(_Meta):
    """Any other subscribed field (`message_template_status_update`, `account_update`, ...)."""

    field: str
    value: Any = None


def _change_kind(change: Any) -> str:
    field = change.get("field") if isinstance(change, dict) else getattr(change, "field", None)
    return field if field in ("messages", "user_preferences") else "other"


Change = Annotated[
    Annotated[MessagesChange, Tag("messages")]
    | Annotated[PreferencesChange, Tag("user_preferences")]
    | Annotated[OtherChange, Tag("other")],
    Discriminator(_change_kind),
]


class Entry(_Meta):
    id: str
    changes: list[Change]


class Notification(_Meta):
    """`POST` body of a WhatsApp Business Account webhook notification."""

    object: Literal["whatsapp_business_account"]
    entry: list[Entry] = Field(min_length=1)
