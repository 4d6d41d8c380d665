"""Held-out prose from the Python Language Reference: the larger part of the evaluation text (`quant.heldout`).

Source: the reference text CPython ships as `pydoc_data.topics` (CPython 3.11): its first 171 distinct
paragraphs of running prose, in the order of the topic names (paragraphs of at least 25 words; grammar rules,
code, examples and lists left out). About 11,500 tokens with SmolLM2's tokenizer. Stored here rather
than read from the interpreter, so every Python version evaluates the same text.

License: the Python documentation is distributed under the PSF License Agreement (Python Software Foundation
License Version 2). Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.

Not calibration text: a test checks that no six-word run is shared with `quant.calibration`. Stdlib only.
"""

# ruff: noqa: RUF001 (the reference's own typographic quotes and dashes, kept as published)

from __future__ import annotations

SOURCE = "Python Language Reference (pydoc_data.topics, CPython 3.11), PSF License Version 2"

PARAGRAPHS: tuple[str, ...] = (
    (
        'These equivalences assume that "__debug__" and "AssertionError" refer to the built-in variables with'
        ' those names. In the current implementation, the built-in variable "__debug__" is "True" under '
        'normal circumstances, "False" when optimization is requested (command line option "-O"). The current'
        " code generator emits no code for an assert statement when optimization is requested at compile "
        "time. Note that it is unnecessary to include the source code for the expression that failed in the "
        "error message; it will be displayed as part of the stack trace."
    ),
    (
        "An assignment statement evaluates the expression list (remember that this can be a single expression"
        " or a comma-separated list, the latter yielding a tuple) and assigns the single resulting object to "
        "each of the target lists, from left to right."
    ),
    (
        "Assignment is defined recursively depending on the form of the target (list). When a target is part "
        "of a mutable object (an attribute reference, subscription or slicing), the mutable object must "
        "ultimately perform the assignment and decide about its validity, and may raise an exception if the "
        "assignment is unacceptable. The rules observed by various types and the exceptions raised are given "
        "with the definition of the object types (see section The standard type hierarchy)."
    ),
    (
        "Although the definition of assignment implies that overlaps between the left-hand side and the "
        'right-hand side are ‘simultaneous’ (for example "a, b = b, a" swaps two variables), overlaps '
        "*within* the collection of assigned-to variables occur left-to-right, sometimes resulting in "
        'confusion. For instance, the following program prints "[0, 2]":'
    ),
    (
        "An augmented assignment evaluates the target (which, unlike normal assignment statements, cannot be "
        "an unpacking) and the expression list, performs the binary operation specific to the type of "
        "assignment on the two operands, and assigns the result to the original target. The target is only "
        "evaluated once."
    ),
    (
        'An augmented assignment expression like "x += 1" can be rewritten as "x = x + 1" to achieve a '
        'similar, but not exactly equal effect. In the augmented version, "x" is only evaluated once. Also, '
        "when possible, the actual operation is performed *in-place*, meaning that rather than creating a new"
        " object and assigning that to the target, the old object is modified instead."
    ),
    (
        "Unlike normal assignments, augmented assignments evaluate the left- hand side *before* evaluating "
        'the right-hand side. For example, "a[i] += f(x)" first looks-up "a[i]", then it evaluates "f(x)" and'
        ' performs the addition, and lastly, it writes the result back to "a[i]".'
    ),
    (
        "With the exception of assigning to tuples and multiple targets in a single statement, the assignment"
        " done by augmented assignment statements is handled the same way as normal assignments. Similarly, "
        "with the exception of the possible *in-place* behavior, the binary operation performed by augmented "
        "assignment is the same as the normal binary operations."
    ),
    (
        "For simple names as assignment targets, if in class or module scope, the annotations are evaluated "
        'and stored in a special class or module attribute "__annotations__" that is a dictionary mapping '
        "from variable names (mangled if private) to evaluated annotations. This attribute is writable and is"
        " automatically created at the start of class or module body execution, if annotations are found "
        "statically."
    ),
    (
        "If a name is annotated in a function scope, then this name is local for that scope. Annotations are "
        "never evaluated and stored in function scopes."
    ),
    (
        "If the right hand side is present, an annotated assignment performs the actual assignment before "
        "evaluating annotations (where applicable). If the right hand side is not present for an expression "
        'target, then the interpreter evaluates the target except for the last "__setitem__()" or '
        '"__setattr__()" call.'
    ),
    (
        "Changed in version 3.8: Now annotated assignments allow the same expressions in the right hand side "
        "as regular assignments. Previously, some expressions (like un-parenthesized tuple expressions) "
        "caused a syntax error."
    ),
    (
        "Execution of Python coroutines can be suspended and resumed at many points (see *coroutine*). "
        '"await" expressions, "async for" and "async with" can only be used in the body of a coroutine '
        "function."
    ),
    (
        "An identifier occurring as an atom is a name. See section Identifiers and keywords for lexical "
        "definition and section Naming and binding for documentation of naming and binding."
    ),
    (
        "When the name is bound to an object, evaluation of the atom yields that object. When a name is not "
        'bound, an attempt to evaluate it raises a "NameError" exception.'
    ),
    (
        "Evaluation of a literal yields an object of the given type (string, bytes, integer, floating point "
        "number, complex number) with the given value. The value may be approximated in the case of floating "
        "point and imaginary (complex) literals. See section Literals for details."
    ),
    (
        "All literals correspond to immutable data types, and hence the object’s identity is less important "
        "than its value. Multiple evaluations of literals with the same value (either the same occurrence in "
        "the program text or a different occurrence) may obtain the same object or a different object with "
        "the same value."
    ),
    (
        'Special names "__getattr__" and "__dir__" can be also used to customize access to module attributes.'
        ' The "__getattr__" function at the module level should accept one argument which is the name of an '
        'attribute and return the computed value or raise an "AttributeError". If an attribute is not found '
        'on a module object through the normal lookup, i.e. "object.__getattribute__()", then "__getattr__" '
        'is searched in the module "__dict__" before raising an "AttributeError". If found, it is called with'
        " the attribute name and the result is returned."
    ),
    (
        'The "__dir__" function should accept no arguments, and return a sequence of strings that represents '
        'the names accessible on module. If present, this function overrides the standard "dir()" search on a'
        " module."
    ),
    (
        "For a more fine grained customization of the module behavior (setting attributes, properties, etc.),"
        ' one can set the "__class__" attribute of a module object to a subclass of "types.ModuleType". For '
        "example:"
    ),
    (
        'The attribute "__objclass__" is interpreted by the "inspect" module as specifying the class where '
        "this object was defined (setting this appropriately can assist in runtime introspection of dynamic "
        "class attributes). For callables, it may indicate that an instance of the given type (or a subclass)"
        " is expected or required as the first positional argument (for example, CPython sets this attribute "
        "for unbound methods that are implemented in C)."
    ),
    (
        "In general, a descriptor is an object attribute with “binding behavior”, one whose attribute access "
        'has been overridden by methods in the descriptor protocol: "__get__()", "__set__()", and '
        '"__delete__()". If any of those methods are defined for an object, it is said to be a descriptor.'
    ),
    (
        "The default behavior for attribute access is to get, set, or delete the attribute from an object’s "
        'dictionary. For instance, "a.x" has a lookup chain starting with "a.__dict__[\'x\']", then '
        '"type(a).__dict__[\'x\']", and continuing through the base classes of "type(a)" excluding metaclasses.'
    ),
    (
        "However, if the looked-up value is an object defining one of the descriptor methods, then Python may"
        " override the default behavior and invoke the descriptor method instead. Where this occurs in the "
        "precedence chain depends on which descriptor methods were defined and how they were called."
    ),
    (
        "For instance bindings, the precedence of descriptor invocation depends on which descriptor methods "
        'are defined. A descriptor can define any combination of "__get__()", "__set__()" and "__delete__()".'
        ' If it does not define "__get__()", then accessing the attribute will return the descriptor object '
        "itself unless there is a value in the object’s instance dictionary. If the descriptor defines "
        '"__set__()" and/or "__delete__()", it is a data descriptor; if it defines neither, it is a non-data '
        'descriptor. Normally, data descriptors define both "__get__()" and "__set__()", while non-data '
        'descriptors have just the "__get__()" method. Data descriptors with "__get__()" and "__set__()" '
        '(and/or "__delete__()") defined always override a redefinition in an instance dictionary. In '
        "contrast, non-data descriptors can be overridden by instances."
    ),
    (
        'Python methods (including those decorated with "@staticmethod" and "@classmethod") are implemented '
        "as non-data descriptors. Accordingly, instances can redefine and override methods. This allows "
        "individual instances to acquire behaviors that differ from other instances of the same class."
    ),
    (
        "The primary must evaluate to an object of a type that supports attribute references, which most "
        "objects do. This object is then asked to produce the attribute whose name is the identifier. The "
        "type and value produced is determined by the object. Multiple evaluations of the same attribute "
        "reference may yield different objects."
    ),
    (
        'This production can be customized by overriding the "__getattribute__()" method or the '
        '"__getattr__()" method. The "__getattribute__()" method is called first and either returns a value '
        'or raises "AttributeError" if the attribute is not available.'
    ),
    (
        "The binary arithmetic operations have the conventional priority levels. Note that some of these "
        "operations also apply to certain non- numeric types. Apart from the power operator, there are only "
        "two levels, one for multiplicative operators and one for additive operators:"
    ),
    (
        'The "*" (multiplication) operator yields the product of its arguments. The arguments must either '
        "both be numbers, or one argument must be an integer and the other must be a sequence. In the former "
        "case, the numbers are converted to a common type and then multiplied together. In the latter case, "
        "sequence repetition is performed; a negative repetition factor yields an empty sequence."
    ),
    (
        'The "/" (division) and "//" (floor division) operators yield the quotient of their arguments. The '
        "numeric arguments are first converted to a common type. Division of integers yields a float, while "
        "floor division of integers results in an integer; the result is that of mathematical division with "
        'the ‘floor’ function applied to the result. Division by zero raises the "ZeroDivisionError" '
        "exception."
    ),
    (
        'The "%" (modulo) operator yields the remainder from the division of the first argument by the '
        "second. The numeric arguments are first converted to a common type. A zero right argument raises the"
        ' "ZeroDivisionError" exception. The arguments may be floating point numbers, e.g., "3.14%0.7" equals'
        ' "0.34" (since "3.14" equals "4*0.7 + 0.34".) The modulo operator always yields a result with the '
        "same sign as its second operand (or zero); the absolute value of the result is strictly smaller than"
        " the absolute value of the second operand [1]."
    ),
    (
        'The floor division and modulo operators are connected by the following identity: "x == (x//y)*y + '
        '(x%y)". Floor division and modulo are also connected with the built-in function "divmod()": '
        '"divmod(x, y) == (x//y, x%y)". [2].'
    ),
    (
        'In addition to performing the modulo operation on numbers, the "%" operator is also overloaded by '
        "string objects to perform old-style string formatting (also known as interpolation). The syntax for "
        "string formatting is described in the Python Library Reference, section printf-style String "
        "Formatting."
    ),
    (
        'The floor division operator, the modulo operator, and the "divmod()" function are not defined for '
        'complex numbers. Instead, convert to a floating point number using the "abs()" function if '
        "appropriate."
    ),
    (
        'The "+" (addition) operator yields the sum of its arguments. The arguments must either both be '
        "numbers or both be sequences of the same type. In the former case, the numbers are converted to a "
        "common type and then added together. In the latter case, the sequences are concatenated."
    ),
    (
        'The "&" operator yields the bitwise AND of its arguments, which must be integers or one of them must'
        ' be a custom object overriding "__and__()" or "__rand__()" special methods.'
    ),
    (
        'The "^" operator yields the bitwise XOR (exclusive OR) of its arguments, which must be integers or '
        'one of them must be a custom object overriding "__xor__()" or "__rxor__()" special methods.'
    ),
    (
        'The "|" operator yields the bitwise (inclusive) OR of its arguments, which must be integers or one '
        'of them must be a custom object overriding "__or__()" or "__ror__()" special methods.'
    ),
    (
        "Code objects are used by the implementation to represent “pseudo- compiled” executable Python code "
        "such as a function body. They differ from function objects because they don’t contain a reference to"
        ' their global execution environment. Code objects are returned by the built- in "compile()" function'
        ' and can be extracted from function objects through their "__code__" attribute. See also the "code" '
        "module."
    ),
    (
        "This object is commonly used by slicing (see Slicings). It supports no special operations. There is "
        'exactly one ellipsis object, named "Ellipsis" (a built-in name). "type(Ellipsis)()" produces the '
        '"Ellipsis" singleton.'
    ),
    (
        "This object is returned by functions that don’t explicitly return a value. It supports no special "
        'operations. There is exactly one null object, named "None" (a built-in name). "type(None)()" '
        "produces the same singleton."
    ),
    (
        "Type objects represent the various object types. An object’s type is accessed by the built-in "
        'function "type()". There are no special operations on types. The standard module "types" defines '
        "names for all standard built-in types."
    ),
    (
        "In the context of Boolean operations, and also when expressions are used by control flow statements,"
        ' the following values are interpreted as false: "False", "None", numeric zero of all types, and '
        "empty strings and containers (including strings, tuples, lists, dictionaries, sets and frozensets). "
        "All other values are interpreted as true. User-defined objects can customize their truth value by "
        'providing a "__bool__()" method.'
    ),
    (
        'The expression "x and y" first evaluates *x*; if *x* is false, its value is returned; otherwise, *y*'
        " is evaluated and the resulting value is returned."
    ),
    (
        'The expression "x or y" first evaluates *x*; if *x* is true, its value is returned; otherwise, *y* '
        "is evaluated and the resulting value is returned."
    ),
    (
        'Note that neither "and" nor "or" restrict the value and type they return to "False" and "True", but '
        'rather return the last evaluated argument. This is sometimes useful, e.g., if "s" is a string that '
        "should be replaced by a default value if it is empty, the expression \"s or 'foo'\" yields the desired"
        ' value. Because "not" has to create a new value, it returns a boolean value regardless of the type '
        'of its argument (for example, "not \'foo\'" produces "False" rather than "\'\'".)'
    ),
    (
        "The primary must evaluate to a callable object (user-defined functions, built-in functions, methods "
        "of built-in objects, class objects, methods of class instances, and all objects having a "
        '"__call__()" method are callable). All argument expressions are evaluated before the call is '
        "attempted. Please refer to section Function definitions for the syntax of formal *parameter* lists."
    ),
    (
        "If keyword arguments are present, they are first converted to positional arguments, as follows. "
        "First, a list of unfilled slots is created for the formal parameters. If there are N positional "
        "arguments, they are placed in the first N slots. Next, for each keyword argument, the identifier is "
        "used to determine the corresponding slot (if the identifier is the same as the first formal "
        'parameter name, the first slot is used, and so on). If the slot is already filled, a "TypeError" '
        "exception is raised. Otherwise, the argument is placed in the slot, filling it (even if the "
        'expression is "None", it fills the slot). When all arguments have been processed, the slots that are'
        " still unfilled are filled with the corresponding default value from the function definition. "
        "(Default values are calculated, once, when the function is defined; thus, a mutable object such as a"
        " list or dictionary used as default value will be shared by all calls that don’t specify an argument"
        " value for the corresponding slot; this should usually be avoided.) If there are any unfilled slots "
        'for which no default value is specified, a "TypeError" exception is raised. Otherwise, the list of '
        "filled slots is used as the argument list for the call."
    ),
    (
        'If there are more positional arguments than there are formal parameter slots, a "TypeError" '
        'exception is raised, unless a formal parameter using the syntax "*identifier" is present; in this '
        "case, that formal parameter receives a tuple containing the excess positional arguments (or an empty"
        " tuple if there were no excess positional arguments)."
    ),
    (
        'If any keyword argument does not correspond to a formal parameter name, a "TypeError" exception is '
        'raised, unless a formal parameter using the syntax "**identifier" is present; in this case, that '
        "formal parameter receives a dictionary containing the excess keyword arguments (using the keywords "
        "as keys and the argument values as corresponding values), or a (new) empty dictionary if there were "
        "no excess keyword arguments."
    ),
    (
        'A consequence of this is that although the "*expression" syntax may appear *after* explicit keyword '
        'arguments, it is processed *before* the keyword arguments (and any "**expression" arguments – see '
        "below). So:"
    ),
    (
        'It is unusual for both keyword arguments and the "*expression" syntax to be used in the same call, '
        "so in practice this confusion does not often arise."
    ),
    (
        'If the syntax "**expression" appears in the function call, "expression" must evaluate to a '
        "*mapping*, the contents of which are treated as additional keyword arguments. If a parameter "
        "matching a key has already been given a value (by an explicit keyword argument, or from another "
        'unpacking), a "TypeError" exception is raised.'
    ),
    (
        'When "**expression" is used, each key in this mapping must be a string. Each value from the mapping '
        "is assigned to the first formal parameter eligible for keyword assignment whose name is equal to the"
        ' key. A key need not be a Python identifier (e.g. ""max-temp °F"" is acceptable, although it will '
        "not match any formal parameter that could be declared). If there is no match to a formal parameter "
        'the key-value pair is collected by the "**" parameter, if there is one, or if there is not, a '
        '"TypeError" exception is raised.'
    ),
    (
        'Changed in version 3.5: Function calls accept any number of "*" and "**" unpackings, positional '
        'arguments may follow iterable unpackings ("*"), and keyword arguments may follow dictionary '
        'unpackings ("**"). Originally proposed by **PEP 448**.'
    ),
    (
        'A call always returns some value, possibly "None", unless it raises an exception. How this value is '
        "computed depends on the type of the callable object."
    ),
    (
        "A class definition is an executable statement. The inheritance list usually gives a list of base "
        "classes (see Metaclasses for more advanced uses), so each item in the list should evaluate to a "
        "class object which allows subclassing. Classes without an inheritance list inherit, by default, from"
        ' the base class "object"; hence,'
    ),
    (
        "The class’s suite is then executed in a new execution frame (see Naming and binding), using a newly "
        "created local namespace and the original global namespace. (Usually, the suite contains mostly "
        "function definitions.) When the class’s suite finishes execution, its execution frame is discarded "
        "but its local namespace is saved. [5] A class object is then created using the inheritance list for "
        "the base classes and the saved local namespace for the attribute dictionary. The class name is bound"
        " to this class object in the original local namespace."
    ),
    (
        "The order in which attributes are defined in the class body is preserved in the new class’s "
        '"__dict__". Note that this is reliable only right after the class is created and only for classes '
        "that were defined using the definition syntax."
    ),
    (
        "Unlike C, all comparison operations in Python have the same priority, which is lower than that of "
        'any arithmetic, shifting or bitwise operation. Also unlike C, expressions like "a < b < c" have the '
        "interpretation that is conventional in mathematics:"
    ),
    (
        'Comparisons yield boolean values: "True" or "False". Custom *rich comparison methods* may return '
        'non-boolean values. In this case Python will call "bool()" on such value in boolean contexts.'
    ),
    (
        'Comparisons can be chained arbitrarily, e.g., "x < y <= z" is equivalent to "x < y and y <= z", '
        'except that "y" is evaluated only once (but in both cases "z" is not evaluated at all when "x < y" '
        "is found to be false)."
    ),
    (
        'The operators "<", ">", "==", ">=", "<=", and "!=" compare the values of two objects. The objects do'
        " not need to have the same type."
    ),
    (
        "Chapter Objects, values and types states that objects have a value (in addition to type and "
        "identity). The value of an object is a rather abstract notion in Python: For example, there is no "
        "canonical access method for an object’s value. Also, there is no requirement that the value of an "
        "object should be constructed in a particular way, e.g. comprised of all its data attributes. "
        "Comparison operators implement a particular notion of what the value of an object is. One can think "
        "of them as defining the value of an object indirectly, by means of their comparison implementation."
    ),
    (
        'Because all types are (direct or indirect) subtypes of "object", they inherit the default comparison'
        ' behavior from "object". Types can customize their comparison behavior by implementing *rich '
        'comparison methods* like "__lt__()", described in Basic customization.'
    ),
    (
        'The default behavior for equality comparison ("==" and "!=") is based on the identity of the '
        "objects. Hence, equality comparison of instances with the same identity results in equality, and "
        "equality comparison of instances with different identities results in inequality. A motivation for "
        'this default behavior is the desire that all objects should be reflexive (i.e. "x is y" implies "x '
        '== y").'
    ),
    (
        'A default order comparison ("<", ">", "<=", and ">=") is not provided; an attempt raises '
        '"TypeError". A motivation for this default behavior is the lack of a similar invariant as for '
        "equality."
    ),
    (
        "The behavior of the default equality comparison, that instances with different identities are always"
        " unequal, may be in contrast to what types will need that have a sensible definition of object value"
        " and value-based equality. Such types will need to customize their comparison behavior, and in fact,"
        " a number of built-in types have done that."
    ),
    (
        'The operators "in" and "not in" test for membership. "x in s" evaluates to "True" if *x* is a member'
        ' of *s*, and "False" otherwise. "x not in s" returns the negation of "x in s". All built-in '
        'sequences and set types support this as well as dictionary, for which "in" tests whether the '
        "dictionary has a given key. For container types such as list, tuple, set, frozenset, dict, or "
        'collections.deque, the expression "x in y" is equivalent to "any(x is e or x == e for e in y)".'
    ),
    (
        'For the string and bytes types, "x in y" is "True" if and only if *x* is a substring of *y*. An '
        'equivalent test is "y.find(x) != -1". Empty strings are always considered to be a substring of any '
        'other string, so """ in "abc"" will return "True".'
    ),
    (
        'For user-defined classes which do not define "__contains__()" but do define "__iter__()", "x in y" '
        'is "True" if some value "z", for which the expression "x is z or x == z" is true, is produced while '
        'iterating over "y". If an exception is raised during the iteration, it is as if "in" raised that '
        "exception."
    ),
    (
        'Lastly, the old-style iteration protocol is tried: if a class defines "__getitem__()", "x in y" is '
        '"True" if and only if there is a non- negative integer index *i* such that "x is y[i] or x == y[i]",'
        ' and no lower integer index raises the "IndexError" exception. (If any other exception is raised, it'
        ' is as if "in" raised that exception).'
    ),
    (
        'The operators "is" and "is not" test for an object’s identity: "x is y" is true if and only if *x* '
        'and *y* are the same object. An Object’s identity is determined using the "id()" function. "x is not'
        ' y" yields the inverse truth value. [4]'
    ),
    (
        "Compound statements contain (groups of) other statements; they affect or control the execution of "
        "those other statements in some way. In general, compound statements span multiple lines, although in"
        " simple incarnations a whole compound statement may be contained in one line."
    ),
    (
        'The "if", "while" and "for" statements implement traditional control flow constructs. "try" '
        'specifies exception handlers and/or cleanup code for a group of statements, while the "with" '
        "statement allows the execution of initialization and finalization code around a block of code. "
        "Function and class definitions are also syntactically compound statements."
    ),
    (
        "A compound statement consists of one or more ‘clauses.’ A clause consists of a header and a ‘suite.’"
        " The clause headers of a particular compound statement are all at the same indentation level. Each "
        "clause header begins with a uniquely identifying keyword and ends with a colon. A suite is a group "
        "of statements controlled by a clause. A suite can be one or more semicolon-separated simple "
        "statements on the same line as the header, following the header’s colon, or it can be one or more "
        "indented statements on subsequent lines. Only the latter form of a suite can contain nested compound"
        ' statements; the following is illegal, mostly because it wouldn’t be clear to which "if" clause a '
        'following "else" clause would belong:'
    ),
    (
        "Also note that the semicolon binds tighter than the colon in this context, so that in the following "
        'example, either all or none of the "print()" calls are executed:'
    ),
    (
        'Note that statements always end in a "NEWLINE" possibly followed by a "DEDENT". Also note that '
        "optional continuation clauses always begin with a keyword that cannot start a statement, thus there "
        'are no ambiguities (the ‘dangling "else"’ problem is solved in Python by requiring nested "if" '
        "statements to be indented)."
    ),
    (
        "It selects exactly one of the suites by evaluating the expressions one by one until one is found to "
        "be true (see section Boolean operations for the definition of true and false); then that suite is "
        'executed (and no other part of the "if" statement is executed or evaluated). If all expressions are '
        'false, the suite of the "else" clause, if present, is executed.'
    ),
    (
        "This repeatedly tests the expression and, if it is true, executes the first suite; if the expression"
        ' is false (which may be the first time it is tested) the suite of the "else" clause, if present, is '
        "executed and the loop terminates."
    ),
    (
        'A "break" statement executed in the first suite terminates the loop without executing the "else" '
        'clause’s suite. A "continue" statement executed in the first suite skips the rest of the suite and '
        "goes back to testing the expression."
    ),
    (
        'A "break" statement executed in the first suite terminates the loop without executing the "else" '
        'clause’s suite. A "continue" statement executed in the first suite skips the rest of the suite and '
        'continues with the next item, or with the "else" clause if there is no next item.'
    ),
    (
        "The for-loop makes assignments to the variables in the target list. This overwrites all previous "
        "assignments to those variables including those made in the suite of the for-loop:"
    ),
    (
        "Names in the target list are not deleted when the loop is finished, but if the sequence is empty, "
        'they will not have been assigned to at all by the loop. Hint: the built-in type "range()" represents'
        ' immutable arithmetic sequences of integers. For instance, iterating "range(3)" successively yields '
        "0, 1, and then 2."
    ),
    (
        "Additional information on exceptions can be found in section Exceptions, and information on using "
        'the "raise" statement to generate exceptions may be found in section The raise statement.'
    ),
    (
        'The "except" clause(s) specify one or more exception handlers. When no exception occurs in the "try"'
        ' clause, no exception handler is executed. When an exception occurs in the "try" suite, a search for'
        ' an exception handler is started. This search inspects the "except" clauses in turn until one is '
        'found that matches the exception. An expression-less "except" clause, if present, must be last; it '
        'matches any exception. For an "except" clause with an expression, that expression is evaluated, and '
        "the clause matches the exception if the resulting object is “compatible” with the exception. An "
        "object is compatible with an exception if the object is the class or a *non- virtual base class* of "
        "the exception object, or a tuple containing an item that is the class or a non-virtual base class of"
        " the exception object."
    ),
    (
        'If the evaluation of an expression in the header of an "except" clause raises an exception, the '
        "original search for a handler is canceled and a search starts for the new exception in the "
        'surrounding code and on the call stack (it is treated as if the entire "try" statement raised the '
        "exception)."
    ),
    (
        'When a matching "except" clause is found, the exception is assigned to the target specified after '
        'the "as" keyword in that "except" clause, if present, and the "except" clause’s suite is executed. '
        'All "except" clauses must have an executable block. When the end of this block is reached, execution'
        ' continues normally after the entire "try" statement. (This means that if two nested handlers exist '
        'for the same exception, and the exception occurs in the "try" clause of the inner handler, the outer'
        " handler will not handle the exception.)"
    ),
    (
        "This means the exception must be assigned to a different name to be able to refer to it after the "
        '"except" clause. Exceptions are cleared because with the traceback attached to them, they form a '
        "reference cycle with the stack frame, keeping all locals in that frame alive until the next garbage "
        "collection occurs."
    ),
    (
        'Before an "except" clause’s suite is executed, the exception is stored in the "sys" module, where it'
        ' can be accessed from within the body of the "except" clause by calling "sys.exception()". When '
        'leaving an exception handler, the exception stored in the "sys" module is reset to its previous '
        "value:"
    ),
    (
        'The "except*" clause(s) are used for handling "ExceptionGroup"s. The exception type for matching is '
        'interpreted as in the case of "except", but in the case of exception groups we can have partial '
        "matches when the type matches some of the exceptions in the group. This means that multiple "
        '"except*" clauses can execute, each handling part of the exception group. Each clause executes at '
        "most once and handles an exception group of all matching exceptions. Each exception in the group is "
        'handled by at most one "except*" clause, the first that matches it.'
    ),
    (
        'Any remaining exceptions that were not handled by any "except*" clause are re-raised at the end, '
        'combined into an exception group along with all exceptions that were raised from within "except*" '
        "clauses."
    ),
    (
        'From version 3.11.4, when the entire "ExceptionGroup" is handled and only one exception is raised '
        'from an "except*" clause, this exception is no longer wrapped to form a new "ExceptionGroup".'
    ),
    (
        'If the raised exception is not an exception group and its type matches one of the "except*" clauses,'
        " it is caught and wrapped by an exception group with an empty message string."
    ),
    (
        'An "except*" clause must have a matching type, and this type cannot be a subclass of '
        '"BaseExceptionGroup". It is not possible to mix "except" and "except*" in the same "try". "break", '
        '"continue" and "return" cannot appear in an "except*" clause.'
    ),
    (
        'The optional "else" clause is executed if the control flow leaves the "try" suite, no exception was '
        'raised, and no "return", "continue", or "break" statement was executed. Exceptions in the "else" '
        'clause are not handled by the preceding "except" clauses.'
    ),
    (
        'If "finally" is present, it specifies a ‘cleanup’ handler. The "try" clause is executed, including '
        'any "except" and "else" clauses. If an exception occurs in any of the clauses and is not handled, '
        'the exception is temporarily saved. The "finally" clause is executed. If there is a saved exception '
        'it is re-raised at the end of the "finally" clause. If the "finally" clause raises another '
        'exception, the saved exception is set as the context of the new exception. If the "finally" clause '
        'executes a "return", "break" or "continue" statement, the saved exception is discarded:'
    ),
    (
        'When a "return", "break" or "continue" statement is executed in the "try" suite of a "try"…"finally"'
        ' statement, the "finally" clause is also executed ‘on the way out.’'
    ),
    (
        'The return value of a function is determined by the last "return" statement executed. Since the '
        '"finally" clause always executes, a "return" statement executed in the "finally" clause will always '
        "be the last one executed:"
    ),
    (
        'The "with" statement is used to wrap the execution of a block with methods defined by a context '
        'manager (see section With Statement Context Managers). This allows common "try"…"except"…"finally" '
        "usage patterns to be encapsulated for convenient reuse."
    ),
    (
        'Pattern matching takes a pattern as input (following "case") and a subject value (following '
        '"match"). The pattern (which may contain subpatterns) is matched against the subject value. The '
        "outcomes are:"
    ),
    (
        'A "guard" (which is part of the "case") must succeed for code inside the "case" block to execute. It'
        ' takes the form: "if" followed by an expression.'
    ),
    (
        "Guards are allowed to have side effects as they are expressions. Guard evaluation must proceed from "
        "the first to the last case block, one at a time, skipping case blocks whose pattern(s) don’t all "
        "succeed. (I.e., guard evaluation must happen in order.) Guard evaluation must stop once a case block"
        " is selected."
    ),
    (
        "An irrefutable case block is a match-all case block. A match statement may have at most one "
        "irrefutable case block, and it must be last."
    ),
    (
        "A case block is considered irrefutable if it has no guard and its pattern is irrefutable. A pattern "
        "is considered irrefutable if we can prove from its syntax alone that it will always succeed. Only "
        "the following patterns are irrefutable:"
    ),
    (
        "The descriptions below will include a description “in simple terms” of what a pattern does for "
        "illustration purposes (credits to Raymond Hettinger for a document that inspired most of the "
        "descriptions). Note that these descriptions are purely for illustration purposes and **may not** "
        "reflect the underlying implementation. Furthermore, they do not cover all valid forms."
    ),
    (
        "An OR pattern matches each of its subpatterns in turn to the subject value, until one succeeds. The "
        "OR pattern is then considered successful. Otherwise, if none of the subpatterns succeed, the OR "
        "pattern fails."
    ),
    (
        'In simple terms, "P1 | P2 | ..." will try to match "P1", if it fails it will try to match "P2", '
        "succeeding immediately if any succeeds, failing otherwise."
    ),
    (
        "If the OR pattern fails, the AS pattern fails. Otherwise, the AS pattern binds the subject to the "
        'name on the right of the as keyword and succeeds. "capture_pattern" cannot be a "_".'
    ),
    (
        'The rule "strings" and the token "NUMBER" are defined in the standard Python grammar. Triple-quoted '
        "strings are supported. Raw strings and byte strings are supported. Formatted string literals are not"
        " supported."
    ),
    (
        "The forms \"signed_number '+' NUMBER\" and \"signed_number '-' NUMBER\" are for expressing complex "
        'numbers; they require a real number on the left and an imaginary number on the right. E.g. "3 + 4j".'
    ),
    (
        'In a given pattern, a given name can only be bound once. E.g. "case x, x: ..." is invalid while '
        '"case [x] | x: ..." is allowed.'
    ),
    (
        "Capture patterns always succeed. The binding follows scoping rules established by the assignment "
        "expression operator in **PEP 572**; the name becomes a local variable in the closest containing "
        'function scope unless there’s an applicable "global" or "nonlocal" statement.'
    ),
    (
        '"_" is a soft keyword within any pattern, but only within patterns. It is an identifier, as usual, '
        'even within "match" subject expressions, "guard"s, and "case" blocks.'
    ),
    (
        "The dotted name in the pattern is looked up using standard Python name resolution rules. The pattern"
        ' succeeds if the value found compares equal to the subject value (using the "==" equality operator).'
    ),
    (
        "At most one star subpattern may be in a sequence pattern. The star subpattern may occur in any "
        "position. If no star subpattern is present, the sequence pattern is a fixed-length sequence pattern;"
        " otherwise it is a variable-length sequence pattern."
    ),
    (
        "At most one double star pattern may be in a mapping pattern. The double star pattern must be the "
        "last subpattern in the mapping pattern."
    ),
    (
        "Duplicate keys in mapping patterns are disallowed. Duplicate literal keys will raise a "
        '"SyntaxError". Two keys that otherwise have the same value will raise a "ValueError" at runtime.'
    ),
    (
        "A function definition is an executable statement. Its execution binds the function name in the "
        "current local namespace to a function object (a wrapper around the executable code for the "
        "function). This function object contains a reference to the current global namespace as the global "
        "namespace to be used when the function is called."
    ),
    (
        "A function definition may be wrapped by one or more *decorator* expressions. Decorator expressions "
        "are evaluated when the function is defined, in the scope that contains the function definition. The "
        "result must be a callable, which is invoked with the function object as the only argument. The "
        "returned value is bound to the function name instead of the function object. Multiple decorators are"
        " applied in nested fashion. For example, the following code"
    ),
    (
        "Function call semantics are described in more detail in section Calls. A function call always "
        "assigns values to all parameters mentioned in the parameter list, either from positional arguments, "
        'from keyword arguments, or from default values. If the form “"*identifier"” is present, it is '
        "initialized to a tuple receiving any excess positional parameters, defaulting to the empty tuple. If"
        ' the form “"**identifier"” is present, it is initialized to a new ordered mapping receiving any '
        'excess keyword arguments, defaulting to a new empty mapping of the same type. Parameters after “"*"”'
        ' or “"*identifier"” are keyword-only parameters and may only be passed by keyword arguments. '
        'Parameters before “"/"” are positional-only parameters and may only be passed by positional '
        "arguments."
    ),
    (
        'Parameters may have an *annotation* of the form “": expression"” following the parameter name. Any '
        'parameter may have an annotation, even those of the form "*identifier" or "**identifier". Functions '
        'may have “return” annotation of the form “"-> expression"” after the parameter list. These '
        "annotations can be any valid Python expression. The presence of annotations does not change the "
        "semantics of a function. The annotation values are available as values of a dictionary keyed by the "
        'parameters’ names in the "__annotations__" attribute of the function object. If the "annotations" '
        'import from "__future__" is used, annotations are preserved as strings at runtime which enables '
        "postponed evaluation. Otherwise, they are evaluated when the function definition is executed. In "
        "this case annotations may be evaluated in a different order than they appear in the source code."
    ),
    (
        "It is also possible to create anonymous functions (functions not bound to a name), for immediate use"
        " in expressions. This uses lambda expressions, described in section Lambdas. Note that the lambda "
        "expression is merely a shorthand for a simplified function definition; a function defined in a "
        '“"def"” statement can be passed around or assigned to another name just like a function defined by a'
        ' lambda expression. The “"def"” form is actually more powerful since it allows the execution of '
        "multiple statements and annotations."
    ),
    (
        "A *context manager* is an object that defines the runtime context to be established when executing a"
        ' "with" statement. The context manager handles the entry into, and the exit from, the desired '
        "runtime context for the execution of the block of code. Context managers are normally invoked using "
        'the "with" statement (described in section The with statement), but can also be used by directly '
        "invoking their methods."
    ),
    (
        '"continue" may only occur syntactically nested in a "for" or "while" loop, but not nested in a '
        "function or class definition within that loop. It continues with the next cycle of the nearest "
        "enclosing loop."
    ),
    (
        'When "continue" passes control out of a "try" statement with a "finally" clause, that "finally" '
        "clause is executed before really starting the next loop cycle."
    ),
    (
        "When a description of an arithmetic operator below uses the phrase “the numeric arguments are "
        "converted to a common type”, this means that the operator implementation for built-in types works as"
        " follows:"
    ),
    (
        "Some additional rules apply for certain operators (e.g., a string as a left argument to the ‘%’ "
        "operator). Extensions must define their own conversion behavior."
    ),
    (
        'The module "pdb" defines an interactive source code debugger for Python programs. It supports '
        "setting (conditional) breakpoints and single stepping at the source line level, inspection of stack "
        "frames, source code listing, and evaluation of arbitrary Python code in the context of any stack "
        "frame. It also supports post-mortem debugging and can be called under program control."
    ),
    (
        'The debugger is extensible – it is actually defined as the class "Pdb". This is currently '
        "undocumented but easily understood by reading the source. The extension interface uses the modules "
        '"bdb" and "cmd".'
    ),
    (
        "at the location you want to break into the debugger, and then run the program. You can then step "
        "through the code following this statement, and continue running without the debugger using the "
        '"continue" command.'
    ),
    (
        'Changed in version 3.3: Tab-completion via the "readline" module is available for commands and '
        'command arguments, e.g. the current global and local names are offered as arguments of the "p" '
        "command."
    ),
    (
        "When invoked as a module, pdb will automatically enter post-mortem debugging if the program being "
        "debugged exits abnormally. After post- mortem debugging (or after normal exit of the program), pdb "
        "will restart the program. Automatic restarting preserves pdb’s state (such as breakpoints) and in "
        "most cases is more useful than quitting the debugger upon program’s exit."
    ),
    (
        'New in version 3.7: "-m" option is introduced to execute modules similar to the way "python -m" '
        "does. As with a script, the debugger will pause execution just before the first line of the module."
    ),
    (
        'The "run*" functions and "set_trace()" are aliases for instantiating the "Pdb" class and calling the'
        " method of the same name. If you want to access further features, you have to do this yourself:"
    ),
    (
        "The commands recognized by the debugger are listed below. Most commands can be abbreviated to one or"
        ' two letters as indicated; e.g. "h(elp)" means that either "h" or "help" can be used to enter the '
        'help command (but not "he" or "hel", nor "H" or "Help" or "HELP"). Arguments to commands must be '
        'separated by whitespace (spaces or tabs). Optional arguments are enclosed in square brackets ("[]") '
        "in the command syntax; the square brackets must not be typed. Alternatives in the command syntax are"
        ' separated by a vertical bar ("|").'
    ),
    (
        "Commands that the debugger doesn’t recognize are assumed to be Python statements and are executed in"
        " the context of the program being debugged. Python statements can also be prefixed with an "
        'exclamation point ("!"). This is a powerful way to inspect the program being debugged; it is even '
        "possible to change a variable or call a function. When an exception occurs in such a statement, the "
        "exception name is printed but the debugger’s state is not changed."
    ),
    (
        'Multiple commands may be entered on a single line, separated by ";;". (A single ";" is not used as '
        "it is the separator for multiple commands in a line that is passed to the Python parser.) No "
        'intelligence is applied to separating the commands; the input is split at the first ";;" pair, even '
        "if it is in the middle of a quoted string. A workaround for strings with double semicolons is to use"
        ' implicit string concatenation "\';\'\';\'" or "";"";"".'
    ),
    (
        'If a file ".pdbrc" exists in the user’s home directory or in the current directory, it is read with '
        "\"'utf-8'\" encoding and executed as if it had been typed at the debugger prompt. This is particularly"
        " useful for aliases. If both files exist, the one in the home directory is read first and aliases "
        "defined there can be overridden by the local file."
    ),
    (
        "Deletion of a name removes the binding of that name from the local or global namespace, depending on"
        ' whether the name occurs in a "global" statement in the same code block. If the name is unbound, a '
        '"NameError" exception will be raised.'
    ),
    (
        "Deletion of attribute references, subscriptions and slicings is passed to the primary object "
        "involved; deletion of a slicing is in general equivalent to assignment of an empty slice of the "
        "right type (but even this is determined by the sliced object)."
    ),
    (
        "Changed in version 3.2: Previously it was illegal to delete a name from the local namespace if it "
        "occurs as a free variable in a nested block."
    ),
    (
        "If a comma-separated sequence of dict items is given, they are evaluated from left to right to "
        "define the entries of the dictionary: each key object is used as a key into the dictionary to store "
        "the corresponding value. This means that you can specify the same key multiple times in the dict "
        "item list, and the final dictionary’s value for that key will be the last one given."
    ),
    (
        'A double asterisk "**" denotes *dictionary unpacking*. Its operand must be a *mapping*. Each mapping'
        " item is added to the new dictionary. Later values replace values already set by earlier dict items "
        "and earlier dictionary unpackings."
    ),
    (
        "A dict comprehension, in contrast to list and set comprehensions, needs two expressions separated "
        "with a colon followed by the usual “for” and “if” clauses. When the comprehension is run, the "
        "resulting key and value elements are inserted in the new dictionary in the order they are produced."
    ),
    (
        "Restrictions on the types of the key values are listed earlier in section The standard type "
        "hierarchy. (To summarize, the key type should be *hashable*, which excludes all mutable objects.) "
        "Clashes between duplicate keys are not detected; the last value (textually rightmost in the display)"
        " stored for a given key value prevails."
    ),
    (
        "Changed in version 3.8: Prior to Python 3.8, in dict comprehensions, the evaluation order of key and"
        " value was not well-defined. In CPython, the value was evaluated before the key. Starting with 3.8, "
        "the key is evaluated before the value, as proposed by **PEP 572**."
    ),
    (
        'The "eval()" and "exec()" functions do not have access to the full environment for resolving names. '
        "Names may be resolved in the local and global namespaces of the caller. Free variables are not "
        'resolved in the nearest enclosing namespace, but in the global namespace. [1] The "exec()" and '
        '"eval()" functions have optional arguments to override the global and local namespace. If only one '
        "namespace is specified, it is used for both."
    ),
    (
        "Exceptions are a means of breaking out of the normal flow of control of a code block in order to "
        "handle errors or other exceptional conditions. An exception is *raised* at the point where the error"
        " is detected; it may be *handled* by the surrounding code block or by any code block that directly "
        "or indirectly invoked the code block where the error occurred."
    ),
    (
        "The Python interpreter raises an exception when it detects a run-time error (such as division by "
        'zero). A Python program can also explicitly raise an exception with the "raise" statement. Exception'
        ' handlers are specified with the "try" … "except" statement. The "finally" clause of such a '
        "statement can be used to specify cleanup code which does not handle the exception, but is executed "
        "whether an exception occurred or not in the preceding code."
    ),
    (
        "Python uses the “termination” model of error handling: an exception handler can find out what "
        "happened and continue execution at an outer level, but it cannot repair the cause of the error and "
        "retry the failing operation (except by re-entering the offending piece of code from the top)."
    ),
    (
        "When an exception is not handled at all, the interpreter terminates execution of the program, or "
        "returns to its interactive main loop. In either case, it prints a stack traceback, except when the "
        'exception is "SystemExit".'
    ),
    (
        'Exceptions are identified by class instances. The "except" clause is selected depending on the class'
        " of the instance: it must reference the class of the instance or a *non-virtual base class* thereof."
        " The instance can be received by the handler and can carry additional information about the "
        "exceptional condition."
    ),
    (
        "A Python program is constructed from code blocks. A *block* is a piece of Python program text that "
        "is executed as a unit. The following are blocks: a module, a function body, and a class definition. "
        "Each command typed interactively is a block. A script file (a file given as standard input to the "
        "interpreter or specified as a command line argument to the interpreter) is a code block. A script "
        'command (a command specified on the interpreter command line with the "-c" option) is a code block. '
        'A module run as a top level script (as module "__main__") from the command line using a "-m" '
        'argument is also a code block. The string argument passed to the built-in functions "eval()" and '
        '"exec()" is a code block.'
    ),
    (
        "A code block is executed in an *execution frame*. A frame contains some administrative information "
        "(used for debugging) and determines where and how execution continues after the code block’s "
        "execution has completed."
    ),
    (
        'The "import" statement of the form "from ... import *" binds all names defined in the imported '
        "module, except those beginning with an underscore. This form may only be used at the module level."
    ),
    (
        "Each assignment or import statement occurs within a block defined by a class or function definition "
        "or at the module level (the top-level code block)."
    ),
    (
        'If a name is bound in a block, it is a local variable of that block, unless declared as "nonlocal" '
        'or "global". If a name is bound at the module level, it is a global variable. (The variables of the '
        "module code block are local and global.) If a variable is used in a code block but not defined "
        "there, it is a *free variable*."
    ),
    (
        "A *scope* defines the visibility of a name within a block. If a local variable is defined in a "
        "block, its scope includes that block. If the definition occurs in a function block, the scope "
        "extends to any blocks contained within the defining one, unless a contained block introduces a "
        "different binding for the name."
    ),
    (
        "When a name is used in a code block, it is resolved using the nearest enclosing scope. The set of "
        "all such scopes visible to a code block is called the block’s *environment*."
    ),
    (
        'When a name is not found at all, a "NameError" exception is raised. If the current scope is a '
        "function scope, and the name refers to a local variable that has not yet been bound to a value at "
        'the point where the name is used, an "UnboundLocalError" exception is raised. "UnboundLocalError" is'
        ' a subclass of "NameError".'
    ),
    (
        "If a name binding operation occurs anywhere within a code block, all uses of the name within the "
        "block are treated as references to the current block. This can lead to errors when a name is used "
        "within a block before it is bound. This rule is subtle. Python lacks declarations and allows name "
        "binding operations to occur anywhere within a code block. The local variables of a code block can be"
        " determined by scanning the entire text of the block for name binding operations. See the FAQ entry "
        "on UnboundLocalError for examples."
    ),
    (
        'If the "global" statement occurs within a block, all uses of the names specified in the statement '
        "refer to the bindings of those names in the top-level namespace. Names are resolved in the top-level"
        " namespace by searching the global namespace, i.e. the namespace of the module containing the code "
        'block, and the builtins namespace, the namespace of the module "builtins". The global namespace is '
        'searched first. If the names are not found there, the builtins namespace is searched. The "global" '
        "statement must precede all uses of the listed names."
    ),
    (
        'The "global" statement has the same scope as a name binding operation in the same block. If the '
        "nearest enclosing scope for a free variable contains a global statement, the free variable is "
        "treated as a global."
    ),
    (
        'The "nonlocal" statement causes corresponding names to refer to previously bound variables in the '
        'nearest enclosing function scope. "SyntaxError" is raised at compile time if the given name does not'
        " exist in any enclosing function scope."
    ),
    (
        "The namespace for a module is automatically created the first time a module is imported. The main "
        'module for a script is always called "__main__".'
    ),
    (
        'Class definition blocks and arguments to "exec()" and "eval()" are special in the context of name '
        "resolution. A class definition is an executable statement that may use and define names. These "
        "references follow the normal rules for name resolution with an exception that unbound local "
        "variables are looked up in the global namespace. The namespace of the class definition becomes the "
        "attribute dictionary of the class. The scope of names defined in a class block is limited to the "
        "class block; it does not extend to the code blocks of methods – this includes comprehensions and "
        "generator expressions since they are implemented using a function scope. This means that the "
        "following will fail:"
    ),
    (
        "The builtins namespace associated with the execution of a code block is actually found by looking up"
        ' the name "__builtins__" in its global namespace; this should be a dictionary or a module (in the '
        'latter case the module’s dictionary is used). By default, when in the "__main__" module, '
        '"__builtins__" is the built-in module "builtins"; when in any other module, "__builtins__" is an '
        'alias for the dictionary of the "builtins" module itself.'
    ),
    (
        "Except when part of a list or set display, an expression list containing at least one comma yields a"
        " tuple. The length of the tuple is the number of expressions in the list. The expressions are "
        "evaluated from left to right."
    ),
    (
        "Note that the integer and exponent parts are always interpreted using radix 10. For example, "
        '"077e010" is legal, and denotes the same number as "77e10". The allowed range of floating point '
        "literals is implementation-dependent. As in integer literals, underscores are supported for digit "
        "grouping."
    ),
)

TEXT = "\n\n".join(PARAGRAPHS)
