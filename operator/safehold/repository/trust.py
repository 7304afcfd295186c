"""What a reader may trust, and what a writer must record: the rules of docs/security.md.

Readers (restore, verify, cat) call :meth:`Trust.check` for every manifest before decoding
anything. It refuses (RepositoryTampered, exit 4, naming the backup):

* a manifest whose backup id, target, namespace or repository id is not where it was read from
  (an older backup copied under a newer id, a manifest moved to another target or repository);
* an unencrypted (or MAC-less) manifest in a target whose policy is encrypted, or read with a key
  while the target's "none" policy is not authenticated by that key (the downgrade);
* a target with backups but no policy record in a repository that records policies.

Writers call :func:`establish` before a backup: it creates the repository id and the target's
record on the first backup, and refuses what the record forbids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.repository import layout
from safehold.repository.policy import (
    KEY_HELP,
    Encryption,
    EncryptionKeyRequired,
    PolicyConflict,
    RepositoryTampered,
    TargetPolicy,
    check_namespace,
    create_policy,
    read_policy,
    was_encrypted,
    write_policy,
)
from safehold.repository.repo import Repository

log = logging.getLogger("safehold.trust")
UNAUTHENTICATED = ("note: shown as stored in the repository, without a key: nothing here is"
                   " authenticated (`safehold verify` with the key checks it)")
ENCRYPTED: Encryption = "aes-256-gcm"


@dataclass(frozen=True)
class _TargetState:
    policy: TargetPolicy | None
    encryption_required: bool
    why: str


class Trust:
    """The checks of one reader: its supplied keys, the repository id, each target's policy."""

    def __init__(self, repo: Repository, keks: Sequence[crypto.Kek]) -> None:
        self.repo = repo
        self.keks = list(keks)
        self._repo_id: str | None = None
        self._repo_id_read = False
        self._targets: dict[str, _TargetState] = {}
        self._checked: set[tuple[str, str]] = set()
        self._warned: set[tuple[str, str]] = set()  # (target, what): one warning per target

    def _warn_once(self, target: str, what: str, message: str, where: str) -> None:
        if (target, what) not in self._warned:
            self._warned.add((target, what))
            log.warning(message, where)

    @property
    def repo_id(self) -> str | None:
        if not self._repo_id_read:
            self._repo_id, self._repo_id_read = self.repo.config().repo_id, True
        return self._repo_id

    def _target(self, target: str) -> _TargetState:
        if target in self._targets:
            return self._targets[target]
        policy = read_policy(self.repo, target)
        if policy is None:
            if self.repo_id is not None:
                raise RepositoryTampered(
                    f"target {target!r} has backups but no policy record"
                    f" ({layout.policy_key(target)}) although repository {self.repo.url}"
                    " records one for every target: it was deleted; do not trust this"
                    " target's backups")
            # A repository written before policy records (format 1): judge by the evidence.
            evidence = was_encrypted(self.repo, target)
            state = _TargetState(None, evidence or bool(self.keks),
                                 "the target has encrypted backups" if evidence
                                 else "a key was supplied")
        else:
            if policy.repo_id != self.repo_id:
                raise RepositoryTampered(
                    f"the policy record of target {target!r} belongs to repository"
                    f" {policy.repo_id}, not {self.repo_id} ({self.repo.url}): it was copied here")
            verified = policy.verified_by(self.keks)
            if policy.encryption == ENCRYPTED:
                state = _TargetState(policy, True, f"target {policy.full_name!r} is encrypted")
            elif self.keks and not verified:
                state = _TargetState(
                    policy, True,
                    "a key was supplied and the target's 'none' policy is not authenticated by it"
                    f" (its MAC key: {policy.mac_key_id or 'none'}; if the target is meant to be"
                    " unencrypted, run without a key)")
            else:
                state = _TargetState(policy, False, "")
        self._targets[target] = state
        return state

    def encryption_required(self, target: str) -> tuple[bool, str]:
        """Whether everything of ``target`` must be encrypted and MAC'd, and why (for records
        that are not manifests: the log archive's segments)."""
        state = self._target(target)
        return state.encryption_required, state.why

    def recorded_namespace(self, target: str) -> tuple[bool, str | None]:
        """(whether the target has a policy record, the namespace it records)."""
        policy = self._target(target).policy
        return policy is not None, policy.namespace if policy is not None else None

    def check(self, manifest: Manifest) -> None:
        """Refuse (RepositoryTampered) a manifest that is misplaced or breaks its policy."""
        target, backup_id = manifest.source
        if (target, backup_id) in self._checked:
            return
        where = f"backup {backup_id} of target {target!r}"
        if manifest.backup_id != backup_id or manifest.target != target:
            raise RepositoryTampered(
                f"{where}: its manifest is that of backup {manifest.backup_id} of target"
                f" {manifest.target!r}: it was copied or moved here; do not restore it")
        state = self._target(target)
        if manifest.encryption == "none" or manifest.mac is None:
            if state.encryption_required:
                raise RepositoryTampered(
                    f"{where} is not encrypted (or has no MAC) but must be: {state.why}. Someone"
                    " who can write to the repository replaced it; do not restore it")
            self._warn_once(target, "plain", "%s is not encrypted: nothing authenticates it"
                            " (anyone who can write to the repository could have written it)",
                            where)
        if manifest.format >= 2:
            if manifest.repo_id != self.repo_id:
                raise RepositoryTampered(
                    f"{where}: its manifest was written to repository {manifest.repo_id}, not to"
                    f" {self.repo_id} ({self.repo.url}): it was copied here; do not restore it")
            if state.policy is not None and manifest.namespace != state.policy.namespace:
                raise RepositoryTampered(
                    f"{where}: its manifest belongs to {manifest.full_name!r}, but this target"
                    f" is {state.policy.full_name!r}: it was copied here; do not restore it")
        else:
            self._warn_once(target, "format-1", "%s has a format-1 manifest: it is not bound to"
                            " this repository's id (back up again to get format-2 backups)",
                            where)
        self._checked.add((target, backup_id))


def prepare_repository(repo: Repository) -> str:
    """The repository id; on the first write of a repository without one (new, or written by a
    safehold before format 2), also a policy record for each target that has backups, judged by
    the evidence (encrypted if any backup left a wrapped key).

    Other writers may be creating the repository at the same moment (an operator starts the
    first backups of many targets at once): one whose id appeared after our look at the config
    is not a replaced config, and a target whose record appeared after our look at the records
    keeps it (a new target's record is written before its first backup, so only a legacy
    target can have backups and no record; it gets one only if none is there by then).
    """
    if repo.config().repo_id is not None:
        return repo.ensure_repo_id()
    targets = [t for t in repo.targets() if layout.is_target_name(t)]
    records = {t: read_policy(repo, t) for t in targets}
    claimed = sorted({p.repo_id for p in records.values() if p is not None})
    if claimed:
        current = repo.config().repo_id  # another writer may have created it since our look
        if current is not None:
            return current
        # records exist, so the id existed: it was removed, not never there
        raise RepositoryTampered(
            f"{layout.CONFIG} of {repo.url} has no repository id, but its targets' policy records"
            f" name {', '.join(claimed)}: the config was replaced or edited; restore it (with"
            f' "repo_id": "{claimed[0]}") before backing up again')
    repo_id = repo.ensure_repo_id()
    for target in targets:
        if not repo.backup_ids(target)[0]:
            continue
        encryption: Encryption = ENCRYPTED if was_encrypted(repo, target) else "none"
        if create_policy(repo, TargetPolicy(target=target, repo_id=repo_id,
                                            encryption=encryption)):
            log.info("recorded the policy of existing target %s: %s", target, encryption)
    return repo_id


def establish(repo: Repository, target: str, namespace: str | None, kek: crypto.Kek | None,
              *, no_encryption: bool, _raced: bool = False) -> TargetPolicy:
    """The target's policy for a new backup: recorded on its first backup, enforced after.

    ``kek`` is the key the user supplied (also with ``no_encryption``: it then authenticates the
    recorded "none"). Raises EncryptionKeyRequired, PolicyConflict or RepositoryTampered.
    """
    check_namespace(namespace)
    repo_id = prepare_repository(repo)
    policy = existing = read_policy(repo, target)
    complete = repo.backup_ids(target)[0]
    if policy is None and _raced:
        raise RepositoryTampered(f"the policy record of target {target!r} was created and then"
                                 " deleted while this backup started")
    if policy is None and complete:
        raise RepositoryTampered(
            f"target {target!r} has {len(complete)} backup(s) but its policy record"
            f" {layout.policy_key(target)} is missing: someone deleted it. Check the"
            " repository (safehold verify with the key) before backing up again")
    verified = policy is not None and policy.verified_by([kek] if kek else [])
    if policy is not None:
        if policy.repo_id != repo_id:
            raise RepositoryTampered(
                f"the policy record of target {target!r} belongs to repository {policy.repo_id},"
                f" not {repo_id} ({repo.url}): it was copied here")
        if policy.namespace != namespace:
            raise PolicyConflict(
                f"target {target!r} in {repo.url} belongs to {policy.full_name!r}; back up"
                f" {namespace + '/' if namespace else ''}{target} under another name (--name)")
    if policy is None or (not complete and not _raced):  # the first backup (or all failed)
        encryption: Encryption
        if no_encryption:
            encryption = "none"
        elif kek is not None:
            encryption = ENCRYPTED
        else:
            raise EncryptionKeyRequired(
                f"target {target!r} has no backups yet and no encryption key was supplied:"
                f" {KEY_HELP}; or choose unencrypted backups explicitly with --no-encryption"
                " (or `encryption: none` for the repository in the config file)")
        policy = TargetPolicy(target=target, namespace=namespace, repo_id=repo_id,
                              encryption=encryption)
        signed = policy.signed(kek) if kek is not None else policy
        if existing is None:
            if not create_policy(repo, signed):  # another first backup's record won: obey it
                return establish(repo, target, namespace, kek, no_encryption=no_encryption,
                                 _raced=True)
        else:
            write_policy(repo, signed)
        return policy
    if policy.encryption == ENCRYPTED:
        if no_encryption:
            raise PolicyConflict(
                f"target {target!r} is encrypted (its first backup chose so): its backups cannot"
                " be unencrypted; drop --no-encryption, or use another --name")
        if kek is None:
            raise EncryptionKeyRequired(
                f"target {target!r} is encrypted: supply its key with --key-file,"
                " SAFEHOLD_KEY_FILE, SAFEHOLD_KEY or SAFEHOLD_PASSPHRASE")
        return policy
    if kek is not None and not no_encryption:
        raise PolicyConflict(
            f"target {target!r} was created unencrypted: pass --no-encryption to keep backing it"
            " up unencrypted, or back it up under another --name to have it encrypted")
    if kek is not None and not verified:
        # The key holder chose "none" explicitly: authenticate the record, unless the target
        # shows signs of having been encrypted (a forged "none" must not be laundered).
        if was_encrypted(repo, target):
            raise RepositoryTampered(
                f"target {target!r} has encrypted backups but its policy record says 'none':"
                " the record was replaced; do not trust this target's backups")
        write_policy(repo, policy.signed(kek))
    return policy


def resign_policies(repo: Repository, old: Sequence[crypto.Kek], new: crypto.Kek) -> int:
    """Key rotation: re-sign every policy record an old key authenticates with the new key (a
    "none" policy must stay authenticated once the old key is destroyed). Checks every record
    before writing any; returns how many were re-signed."""
    pending = []
    for target in repo.targets():
        if not layout.is_target_name(target):
            continue
        policy = read_policy(repo, target)
        if policy is not None and policy.mac_key_id != new.key_id and policy.verified_by(
                list(old)):
            pending.append(policy)
    for policy in pending:
        write_policy(repo, policy.signed(new))
    return len(pending)
