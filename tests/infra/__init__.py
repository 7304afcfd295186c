"""Real servers for the test suite: each module starts one kind on 127.0.0.1 and stops it by PID.

Every service is a plain class usable outside pytest (see docs/testing.md for running one by
hand) plus a pytest fixture in ``tests/infra/fixtures.py``.
"""
