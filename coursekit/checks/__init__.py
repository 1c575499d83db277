"""Checks a student runs right after each exercise.

Each ``check_*`` function runs the student's code against the kit's
reference on seeded inputs and raises ``AssertionError`` with a message that
says what was expected, what came out and a hint. On success it prints one
line starting with ``check passed:``. One module per notebook:

* ``coursekit.checks.transforms``  notebook 01
* ``coursekit.checks.backprop``    notebook 02
* ``coursekit.checks.classifier``  notebook 03
* ``coursekit.checks.segmentation`` notebook 04
* ``coursekit.checks.colorization`` notebook 05
* ``coursekit.checks.finetuning``   notebook 06
"""
