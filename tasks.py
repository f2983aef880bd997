"""Invoke tasks: the harness's commands (``invoke --list``, ``invoke --help selftest``).

They are built from the one declaration of every command's options
(harness/options.py) by tools/invoke_front.py; settings come from the flags
given, then Invoke's configuration (``invoke.yaml`` sections such as
``selftest:``, or ``INVOKE_SELFTEST_<NAME>`` environment variables), then the
declared defaults.
"""

from tools.invoke_front import adopt_running_program, collection

ns = collection()
adopt_running_program()
