//! The data layer end to end: file formats, the paper's prompts, tokenization,
//! tokenized safetensors, the bundled default, and bad input through the library
//! and through the `maskscape` binary.

mod common;

use std::path::Path;

use maskscape::data::{self, DataSpec, Dataset, LmExample, Task, TextDataset, TextEncoder};
use maskscape::model::OptConfig;
use maskscape::model::checkpoint::Checkpoint;
use maskscape::model::tokenizer::OptTokenizer;
use maskscape::report::table::Table;

use common::{assert_user_error, maskscape, repo, write};

fn task(name: &str) -> Task {
    Task::new(name, None, None).unwrap()
}

fn classification(data: TextDataset) -> Vec<data::ClassificationText> {
    match data {
        TextDataset::Classification(v) => v,
        TextDataset::Lm(_) => panic!("classification expected"),
    }
}

#[test]
fn jsonl_csv_and_parquet_give_identical_examples() {
    let dir = tempfile::tempdir().unwrap();
    let sentences = [
        "A warm, funny film.",
        "He said \"never again\" and meant it.",
        "Café scenes, naïve leads; 3 stars?",
        "  Padded with spaces  ",
        "1999",
        "Dull.",
    ];
    let labels = [1i64, 0, 1, 0, 1, 0];
    let table = Table::new()
        .with_str(
            "sentence",
            sentences.iter().map(|s| s.to_string()).collect(),
        )
        .with_i64("label", labels.to_vec())
        .with_i64("idx", (0..6).collect());
    let csv = dir.path().join("d.csv");
    let parquet = dir.path().join("d.parquet");
    table.write_csv(&csv).unwrap();
    table.write_parquet(&parquet).unwrap();
    let lines: String = sentences
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (s, l))| {
            format!(
                "{}\n",
                serde_json::json!({"sentence": s, "label": l, "idx": i})
            )
        })
        .collect();
    let jsonl = write(dir.path(), "d.jsonl", &lines);

    let load = |path: &Path| {
        let mut spec = DataSpec::new(path, task("sst2"));
        spec.max_examples = Some(4);
        spec.seed = 3;
        data::load_text(&spec).unwrap().examples
    };
    let from_jsonl = load(&jsonl);
    assert_eq!(from_jsonl.len(), 4);
    assert_eq!(from_jsonl, load(&csv), "CSV differs from JSON lines");
    assert_eq!(
        from_jsonl,
        load(&parquet),
        "Parquet differs from JSON lines"
    );
    let all = classification(
        data::load_text(&DataSpec::new(&csv, task("sst2")))
            .unwrap()
            .examples,
    );
    assert_eq!(all[3].prompt, "Padded with spaces It was");
    assert_eq!(
        all[4].prompt, "1999 It was",
        "numeric-looking text stays text"
    );
}

#[test]
fn each_task_renders_the_papers_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "sst2",
            r#"{"sentence": "a gentle, generous comedy ", "label": 1, "idx": 0}"#,
            "a gentle, generous comedy It was",
            " great",
        ),
        (
            "rte",
            r#"{"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": 0, "idx": 0}"#,
            "The cat sat on the mat.\nDoes this mean that \"A cat is sitting.\" is true? Yes or No?\n",
            "Yes",
        ),
        (
            "rte",
            r#"{"sentence1": "It rained all day.", "sentence2": "The ground is dry.", "label": 1, "idx": 0}"#,
            "It rained all day.\nDoes this mean that \"The ground is dry.\" is true? Yes or No?\n",
            "No",
        ),
        (
            "cb",
            r#"{"premise": "She might come tomorrow.", "hypothesis": "she will come", "label": 2, "idx": 0}"#,
            "Suppose She might come tomorrow. Can we infer that \"she will come\"? Yes, No, or Maybe?\n",
            "Maybe",
        ),
        (
            "boolq",
            r#"{"question": "is the moon made of cheese", "passage": "The moon is made of rock.", "idx": 0, "label": 0}"#,
            "The moon is made of rock. Is the moon made of cheese?\n",
            "No",
        ),
        (
            "boolq",
            r#"{"question": "is water wet", "answer": true, "passage": "Water wets things."}"#,
            "Water wets things. Is water wet?\n",
            "Yes",
        ),
        (
            "classification",
            r#"{"review": "Loved it", "label": "great"}"#,
            "Review: Loved it\nVerdict:",
            " great",
        ),
    ];
    let candidates = vec!["terrible".to_string(), "great".to_string()];
    for (i, (name, row, prompt, gold)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("{i}.jsonl"), &format!("{row}\n"));
        let task = if *name == "classification" {
            Task::new(
                name,
                Some("Review: {review}\\nVerdict: {answer}"),
                Some(&candidates),
            )
            .unwrap()
        } else {
            task(name)
        };
        let examples = classification(
            data::load_text(&DataSpec::new(&path, task))
                .unwrap()
                .examples,
        );
        assert_eq!(examples[0].prompt, *prompt, "{name}");
        assert_eq!(examples[0].candidates[examples[0].gold], *gold, "{name}");
    }
    let lm = write(dir.path(), "lm.jsonl", "{\"text\": \" The end. \"}\n");
    let data = data::load_text(&DataSpec::new(&lm, task("lm"))).unwrap();
    assert_eq!(
        data.examples,
        TextDataset::Lm(vec![data::LmText {
            text: "The end.".into()
        }])
    );
}

#[test]
fn tokenized_classification_marks_exactly_the_candidate_tokens() {
    let tokenizer = OptTokenizer::from_dir(&repo("bundled/opt-bundled")).unwrap();
    let mut spec = DataSpec::new(repo("bundled/sst2-mini/dev.jsonl"), task("sst2"));
    spec.max_examples = Some(16);
    let text = classification(data::load_text(&spec).unwrap().examples);
    let loaded = data::load(&spec, Some(&tokenizer), 128).unwrap();
    let Dataset::Classification(examples) = &loaded.dataset else {
        panic!("classification expected")
    };
    assert_eq!(examples.len(), 16);
    assert_eq!(loaded.truncated, 0);
    for (ex, text) in examples.iter().zip(&text) {
        assert_eq!(ex.gold, text.gold);
        for c in 0..2 {
            let sequence = ex.sequence(c);
            // The whole text encoded at once equals BOS + prompt + candidate:
            // candidates really are continuations.
            let mut joint = vec![2];
            joint.extend(tokenizer.token_ids(&text.full_text(c)).unwrap());
            assert_eq!(sequence, joint);
            let positions = ex.candidate_positions(c);
            assert_eq!(positions.end, sequence.len());
            assert_eq!(
                sequence[positions.clone()],
                tokenizer.token_ids(&text.candidates[c]).unwrap()[..]
            );
            let row = ex.candidate_row(c);
            for (t, label) in row.labels.iter().enumerate() {
                assert_eq!(label.is_some(), positions.contains(&t), "position {t}");
            }
        }
    }
    // Truncation keeps BOS and the candidate, and drops the start of the prompt.
    let short = data::load(&spec, Some(&tokenizer), 8).unwrap();
    let Dataset::Classification(cut) = &short.dataset else {
        panic!("classification expected")
    };
    assert_eq!(short.truncated, 16);
    for (cut, full) in cut.iter().zip(examples) {
        assert_eq!(cut.max_len(), 8);
        assert_eq!(cut.prompt[0], 2);
        assert!(full.prompt.ends_with(&cut.prompt[1..]));
        assert_eq!(cut.candidates, full.candidates);
    }
}

#[test]
fn tokenized_safetensors_reads_the_reference_fixture() {
    let path = repo("tests/fixtures/opt-tiny-preln/reference.safetensors");
    let spec = DataSpec {
        path: path.clone(),
        task: None,
        columns: Vec::new(),
        max_examples: None,
        seed: 0,
    };
    let loaded = data::load(&spec, None, 16).unwrap();
    let Dataset::Lm(rows) = &loaded.dataset else {
        panic!("language-modelling rows expected")
    };
    let lengths: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
    assert_eq!(
        lengths,
        vec![12, 9, 7],
        "padding (attention_mask 0) is removed"
    );
    assert_eq!(rows[2].ids, vec![34, 27, 38, 30, 38, 33, 28]);
    assert_eq!(
        rows[1].labels,
        [
            None,
            Some(20),
            Some(9),
            Some(35),
            Some(30),
            Some(11),
            Some(36),
            Some(29),
            Some(13)
        ]
    );
    // The fixture's loss averages over the 25 positions whose next label is not -100.
    let scored: usize = rows.iter().map(LmExample::scored_tokens).sum();
    assert_eq!(scored, 25);
    assert!(loaded.dataset.check_vocab(40).is_ok());
    assert!(loaded.dataset.check_vocab(38).is_err());

    let err = data::load(&spec, None, 10).unwrap_err().to_string();
    assert!(
        err.contains("example 1: 12 tokens exceed the model's 10 positions"),
        "{err}"
    );
    let mut sampled = spec.clone();
    sampled.max_examples = Some(2);
    let two = data::load(&sampled, None, 16).unwrap();
    assert_eq!(two.dataset.len(), 2);
    assert_eq!(two.rows_in_file, 3);
    sampled.max_examples = Some(0);
    let err = data::load(&sampled, None, 16).unwrap_err().to_string();
    assert_eq!(err, "--max-examples: must be at least 1");
    let mut wrong_task = spec.clone();
    wrong_task.task = Some(task("sst2"));
    let err = data::load(&wrong_task, None, 16).unwrap_err().to_string();
    assert!(err.starts_with("--task: sst2 needs text data"), "{err}");

    // With the fixture's model: positions and vocabulary are checked, and text data
    // is refused for want of a tokenizer.
    let model_dir = repo("tests/fixtures/opt-tiny-preln");
    let config = OptConfig::from_file(&model_dir.join("config.json")).unwrap();
    let for_model = data::load_for_model(&spec, &model_dir, &config).unwrap();
    assert_eq!(for_model.dataset, loaded.dataset);
    let text = DataSpec::new(repo("bundled/sst2-mini/dev.jsonl"), task("sst2"));
    let err = data::load_for_model(&text, &model_dir, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokenizer found"), "{err}");

    let (code, stdout, stderr) = maskscape(&[
        "data",
        "inspect",
        "--data",
        "tests/fixtures/opt-tiny-preln/reference.safetensors",
        "--model",
        "tests/fixtures/opt-tiny-preln",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tokenized, 3 rows, 3 kept"), "{stdout}");
    assert!(stdout.contains("25 scored targets"), "{stdout}");
}

#[test]
fn bad_input_gives_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let no_text = write(
        dir.path(),
        "no_text.jsonl",
        "{\"review\": \"Fine.\", \"label\": 1}\n",
    );
    let bad_label = write(
        dir.path(),
        "bad_label.csv",
        "sentence,label\nFine.,1\nOdd.,7\n",
    );
    let empty = write(dir.path(), "empty.jsonl", "");
    let header_only = write(dir.path(), "header.csv", "sentence,label\n");
    let malformed = write(
        dir.path(),
        "malformed.jsonl",
        "{\"sentence\": \"Fine.\", \"label\": 1}\n\n{\"sentence\": \"Odd.\" \"label\": 0}\n",
    );
    let cases: [(&Path, &str, &str); 5] = [
        (
            &no_text,
            "sst2",
            "task sst2 needs a `sentence` column (looked for: sentence, text); columns present: review, label",
        ),
        (
            &bad_label,
            "sst2",
            "bad_label.csv: row 2: label 7 is not one of the candidates of task sst2 (0 = terrible/negative, 1 = great/positive)",
        ),
        (
            &empty,
            "sst2",
            "empty.jsonl: the dataset is empty (no rows)",
        ),
        (
            &header_only,
            "sst2",
            "header.csv: the dataset is empty (no rows)",
        ),
        (
            &malformed,
            "sst2",
            "malformed.jsonl: line 3: malformed JSON",
        ),
    ];
    for (path, name, expected) in cases {
        let err = data::load_text(&DataSpec::new(path, task(name)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "library: expected {expected:?} in {err:?}"
        );
        let path = path.to_str().unwrap();
        assert_user_error(
            &["data", "inspect", "--data", path, "--task", name],
            &[expected],
        );
    }
    let any = no_text.to_str().unwrap();
    assert_user_error(
        &["data", "inspect", "--data", any, "--task", "mnli"],
        &["--task: unknown task `mnli`; known: sst2, rte, cb, boolq, lm, classification"],
    );
    assert_user_error(
        &[
            "data",
            "inspect",
            "--data",
            any,
            "--task",
            "sst2",
            "--column",
            "sentence=text",
        ],
        &["no column `text` (given by --column sentence=text); columns present: review, label"],
    );
    assert_user_error(
        &[
            "data",
            "inspect",
            "--data",
            any,
            "--task",
            "sst2",
            "--max-examples",
            "0",
        ],
        &["--max-examples: must be at least 1"],
    );
    assert_user_error(
        &[
            "data",
            "inspect",
            "--data",
            "missing.jsonl",
            "--task",
            "sst2",
        ],
        &["missing.jsonl: No such file or directory"],
    );
}

#[test]
fn inspect_prints_columns_balance_and_token_lengths() {
    let (code, stdout, stderr) = maskscape(&[
        "data",
        "inspect",
        "--data",
        "bundled/sst2-mini/train.jsonl",
        "--task",
        "classification",
        "--template",
        "Review: {sentence}\\nSentiment: {answer}",
        "--candidates",
        "negative,positive",
        "--max-examples",
        "20",
        "--seed",
        "5",
        "--model",
        "bundled/opt-bundled",
        "--show",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("JSON lines, 320 rows"), "{stdout}");
    assert!(
        stdout.contains("task classification: sentence <- `sentence`, label <- `label`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("20 examples (at most 20, seed 5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("candidates [\" negative\", \" positive\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("; 0 truncated"), "{stdout}");
}

#[test]
fn bundled_sentiment_data_is_balanced_and_fits_the_bundled_model() {
    // The bundled tokenizer and weights are checked against the commands that make
    // them in tests/bundled.rs; here the sentiment data meets the model.
    let model_dir = repo("bundled/opt-bundled");
    let config = Checkpoint::<f32>::load(&model_dir).unwrap().config;
    for split in ["train", "dev"] {
        let spec = DataSpec::new(
            repo(&format!("bundled/sst2-mini/{split}.jsonl")),
            task("sst2"),
        );
        let text = data::load_text(&spec).unwrap();
        let counts = text.examples.gold_counts().unwrap();
        assert_eq!(counts[0], counts[1], "{split} is balanced");
        let loaded = data::load_for_model(&spec, &model_dir, &config).unwrap();
        assert_eq!(loaded.dataset.len(), counts[0] + counts[1]);
        assert_eq!(loaded.truncated, 0, "{split} fits the positions");
    }
    // A vocabulary too small for the byte alphabet is refused in one line.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok");
    let (code, _, stderr) = maskscape(&[
        "tokenizer",
        "train",
        "--text",
        "bundled/sst2-mini/train.jsonl",
        "--vocab-size",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--vocab-size: 10 is below 260"), "{stderr}");
}
