"""The vocabulary of names: a customer learned one at a time is recognized exactly as if every name had been
compiled together, and segmentation keeps staff names whole as the staff change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.nlu.vocabulary import NAME_FREQ, Vocabulary

CHARS = "恒力液压华为宁德时代潍柴动力北京上海科技有限公司集团材料新能源机械"
names = st.text(alphabet=CHARS, min_size=2, max_size=9)
customers = st.dictionaries(names, st.lists(names, max_size=2), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(customers, names, st.lists(names, max_size=2), st.lists(st.text(alphabet=CHARS, max_size=30), max_size=8))
def test_a_learned_customer_is_found_as_if_compiled_with_the_rest(
    known: dict[str, list[str]], name: str, aliases: list[str], texts: list[str]
) -> None:
    staff = ["张三", "力液"]
    learned = Vocabulary.build(known.items(), staff)
    learned.learn_customer(name, aliases)
    compiled = Vocabulary.build([*known.items(), (name, aliases)], staff)

    assert learned.resolve(name) == compiled.resolve(name)
    for alias in aliases:
        assert learned.resolve(alias) == compiled.resolve(alias)
    for text in [*texts, name + "的报价", "".join(aliases)]:
        assert learned.customers_in(text) == compiled.customers_in(text)
        assert learned.staff_in(text) == compiled.staff_in(text)


def test_staff_names_stay_whole_and_leave_with_the_staff() -> None:
    jiebas_own = Vocabulary.build([], []).tokenizer.FREQ.get("欧阳锋")
    before = Vocabulary.build([("恒力液压有限公司", ["恒力"])], ["欧阳锋"])
    assert "欧阳锋" in before.words("明天欧阳锋去苏州拜访")
    assert before.tokenizer.FREQ["欧阳锋"] == NAME_FREQ

    after = Vocabulary.build([("恒力液压有限公司", ["恒力"])], ["李娜"])
    assert "李娜" in after.words("李娜说客户漏油了")
    assert after.tokenizer.FREQ.get("欧阳锋") == jiebas_own  # what jieba had before the name came
