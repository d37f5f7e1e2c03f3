"""One password policy for every way a password is set: account creation (API and
``create-admin``), one's own change, an administrator setting it, and a reset link.

Account creation used to check only the length, so "password", "12345678", eight spaces and
the user name itself were accepted, while a change refused the user name (probe 7). The
rules follow NIST SP 800-63B 5.1.1.2: a minimum length, and no value from a list of commonly
used passwords or from the context (the user name); no composition rules.
"""

from __future__ import annotations

MIN_LENGTH = 8

#: The most common passwords of at least MIN_LENGTH characters in public breach lists
#: (e.g. the NCSC "100k most common" list), folded to lower case.
COMMON = frozenset(
    {
        "password", "password1", "password12", "password123", "password!", "passw0rd",
        "p@ssw0rd", "p@ssword", "1password", "passpass", "passwort", "passwort1",
        "12345678", "123456789", "1234567890", "0123456789", "87654321", "987654321",
        "12341234", "11223344", "12121212", "123123123", "1q2w3e4r", "1q2w3e4r5t",
        "q1w2e3r4", "1qaz2wsx", "zaq12wsx", "qwertyui", "qwertyuiop", "qwerty123",
        "qwerty12", "123qweasd", "qweasdzxc", "asdfghjk", "asdfghjkl", "asdf1234",
        "zxcvbnm1", "abcd1234", "abc12345", "abcdefgh", "iloveyou", "iloveyou1",
        "sunshine", "princess", "football", "baseball", "superman", "trustno1",
        "welcome1", "welcome123", "letmein1", "letmein!", "whatever", "starwars",
        "dragon12", "master12", "monkey12", "shadow12", "michael1", "jennifer",
        "computer", "internet", "changeme", "default1", "secret12", "testtest",
        "test1234", "guest123", "admin123", "adminadmin", "administrator", "hallo123",
        "lucent123", "lucentlucent",
    }
)  # fmt: skip


def problem(password: str, username: str) -> str:
    """Why ``password`` may not be used for the account ``username`` ('' = it may)."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    folded = password.strip().casefold()
    if not folded:
        return "password must not be only spaces"
    if folded == username.strip().casefold():
        return "password must not be the user name"
    if len(set(folded)) == 1:
        return "password must not be one character repeated"
    if folded in COMMON:
        return "password is one of the most common passwords; choose another"
    return ""
