"""The hooks a swreg plugin may implement.

Every hook is prefixed ``swreg_``, takes keyword arguments only and returns frozen, declarative
values (never engine internals: no session, no plugin manager, no card connection). Plugins are
found through the ``swreg`` entry-point group; the built-in plugins use it too.

A plugin module looks like::

    from engine import hookimpl

    @hookimpl
    def swreg_applicant_types():
        return [ApplicantType(code="enterprise.airline", ...)]

Hooks by lifecycle phase:

- declaration (called once, when the engine is bootstrapped): :func:`swreg_applicant_types`,
  :func:`swreg_usage_types`, :func:`swreg_workflow_steps`;
- notification (called after a transaction committed): :func:`swreg_registration_completed`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from engine.core.declarations import ApplicantType, RegistrationCompleted, StepSpec, UsageType

PROJECT_NAME = "swreg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- declaration -----------------------------------------------------------------------------


@hookspec
def swreg_applicant_types() -> Sequence[ApplicantType]:
    """Declare applicant types (類別 / 屬性) this plugin provides.

    Parameters: none.

    Returns: a sequence of :class:`~engine.ApplicantType`. Codes are unique across plugins; a
    duplicate code is a :class:`~engine.DefinitionError` at bootstrap.
    """
    raise NotImplementedError


@hookspec
def swreg_usage_types() -> Sequence[UsageType]:
    """Declare 通關憑證 usage types (憑證使用類型) this plugin provides.

    Parameters: none.

    Returns: a sequence of :class:`~engine.UsageType` with unique codes.
    """
    raise NotImplementedError


@hookspec
def swreg_workflow_steps() -> Sequence[StepSpec]:
    """Contribute workflow steps that a workflow definition file may place.

    Parameters: none.

    Returns: a sequence of :class:`~engine.StepSpec`. A step appears in a registration only when
    the workflow definition lists it; its ``form`` (if any) is validated like the built-in forms.
    A step with ``actor="officer"`` (for example an approval step) takes no applicant input: the
    registration waits there (待審核) until an officer approves it (it moves on; entering
    ``completed`` creates the account) or rejects it (it ends in ``rejected``, no account). Ids
    are unique across plugins and may not be a built-in step's; an officer step has no ``form``
    (either mistake is a :class:`~engine.DefinitionError` at bootstrap).
    """
    raise NotImplementedError


# -- notification ----------------------------------------------------------------------------


@hookspec
def swreg_registration_completed(event: RegistrationCompleted) -> None:
    """Be told that a registration completed and its account exists.

    Parameters: ``event``, a frozen :class:`~engine.RegistrationCompleted`; called after the
    transaction that created the account committed.

    Returns: nothing; return values are ignored and an exception does not undo the account.
    """
