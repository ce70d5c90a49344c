"""fusion.research.citations: sources numbered per member, merged across the panel, cited in the answer."""

from fusion.research.citations import SourceBook, cited, merge, renumber, source_list, with_source_list
from fusion_contracts import Source, limits

A = Source(url="https://a.example/1", title="Page A")
B = Source(url="https://b.example/2", title="Page B")
C = Source(url="https://c.example/3", title="Page C")


def test_a_book_numbers_each_url_once_in_order() -> None:
    book = SourceBook()
    assert [book.add(A), book.add(B), book.add(A)] == [1, 2, 1]
    assert book.sources == [A, B]


def test_a_book_stops_at_the_limit() -> None:
    book = SourceBook()
    numbers = [book.add(Source(url=f"https://x.example/{i}")) for i in range(limits.MAX_SOURCES + 3)]
    assert numbers[-1] is None
    assert len(book.sources) == limits.MAX_SOURCES


def test_listed_results_get_the_books_numbers() -> None:
    book = SourceBook()
    book.add(C)
    text = book.cite("[1] Page A\nhttps://a.example/1\n[2] Page B\nhttps://b.example/2", [A, B])
    assert text.splitlines()[0] == "[2] Page A"
    assert text.splitlines()[2] == "[3] Page B"


def test_an_unlisted_result_is_headed_by_its_sources_numbers() -> None:
    book = SourceBook()
    book.add(C)
    text = book.cite("Title: Page A\nThe body, which mentions [1] in passing.", [A])
    assert text.startswith("Cite as: [2] Page A <https://a.example/1>")
    assert "mentions [1] in passing" in text  # a page's own text is not renumbered


def test_renumber_maps_and_drops_unknown_numbers_but_leaves_indexes_alone() -> None:
    text = "Rayleigh [1]. Both [1, 2]. Made up [7]. Code a[1] and links [x][1]."
    assert renumber(text, {1: 3, 2: 1}) == "Rayleigh [3]. Both [3, 1]. Made up . Code a[1] and links [x][1]."


def test_merge_deduplicates_across_members_and_renumbers_their_answers() -> None:
    answers = {0: ("Zero cites [1] and [2].", [A, B]), 1: ("One cites [1].", [B]), 2: ("None.", [])}
    sources, texts = merge(answers)
    assert sources == [A, B]
    assert texts == {0: "Zero cites [1] and [2].", 1: "One cites [2].", 2: "None."}


def test_merge_keeps_members_in_index_order() -> None:
    sources, texts = merge({1: ("One [1].", [C]), 0: ("Zero [1].", [A])})
    assert sources == [A, C]
    assert texts[1] == "One [2]."


def test_the_answer_ends_with_the_sources_it_cites_and_no_list_of_its_own() -> None:
    answer = "Blue light scatters more [2]. See also [2, 1].\n\nSources:\n[1] something the judge wrote"
    listed = with_source_list(answer, [A, B, C])
    body, _, tail = listed.partition("\n\nSources:\n")
    assert body == "Blue light scatters more [2]. See also [2, 1]."
    assert tail.splitlines() == ["[1] Page A <https://a.example/1>", "[2] Page B <https://b.example/2>"]


def test_a_streamed_answer_is_only_added_to() -> None:
    answer = "Blue [1].\n\nReferences:\n- mine"
    assert with_source_list(answer, [A], replace_own=False).startswith(answer)


def test_an_answer_citing_nothing_is_unchanged() -> None:
    assert with_source_list("No citations here.", [A]) == "No citations here."
    assert with_source_list("Out of range [9].", [A]) == "Out of range [9]."


def test_the_answer_with_its_list_stays_within_the_limit() -> None:
    answer = "x" * limits.MAX_ANSWER_CHARS + " [1]"
    listed = with_source_list(answer[-10:] + "[1]", [A])
    assert listed.endswith("<https://a.example/1>")
    assert len(with_source_list("[1] " + answer, [A])) <= limits.MAX_ANSWER_CHARS


def test_cited_and_source_list() -> None:
    assert cited("a [2] b [1, 2] c [3]") == [2, 1, 3]
    assert source_list([A, Source(url="https://n.example")]) == (
        "[1] Page A <https://a.example/1>\n[2] https://n.example <https://n.example>"
    )
