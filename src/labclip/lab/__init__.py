"""The lab layer: experiments, comparisons, prose, tables, figures and reports on top of the core.

Modules here may import the core (``labclip.*``) and display libraries (pandas, matplotlib,
IPython, nbconvert); the core never imports from here.
"""
