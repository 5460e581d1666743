"""The ground floor: pieces every layer may import (scripts, helper, distillers, dataset, models).

`errors.UserError` (a mistake the user must fix: one line, no traceback), `files.write_atomic`
(complete or absent), `collectives` (the few DDP collectives a method or a data set needs;
no-ops in one process). Nothing here imports any other package of the project.
"""
