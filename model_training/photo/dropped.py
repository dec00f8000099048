"""WordNet synsets left out of the photo model's tags: ancestors of ImageNet classes that read
badly as tags. Chosen by hand from the 860 ancestors of the 1,000 ImageNet-1k classes in
WordNet 3.0 (the name after each id is its first lemma). A dropped synset's classes still
reach the tags above and below it; only the tag itself is missing.
"""

from __future__ import annotations

DROPPED_SYNSETS: frozenset[str] = frozenset(
    {
        # Abstract or structural top-level synsets: no one tags a photo 'whole' or 'relation'.
        "n00001740",  # entity
        "n00001930",  # physical entity
        "n00002684",  # object
        "n00003553",  # whole
        "n00021939",  # artifact
        "n00004475",  # organism
        "n00004258",  # living thing
        "n03575240",  # instrumentality
        "n00020827",  # matter
        "n14939900",  # fluid (liquid, its child, says it better)
        "n00019613",  # substance
        "n00020090",  # substance
        "n15046900",  # solid
        "n00019128",  # natural object
        "n00002137",  # abstraction
        "n03892891",  # part
        "n13809207",  # part
        "n00031921",  # relation
        "n00024264",  # attribute
        "n00027807",  # shape
        "n13865483",  # round shape
        "n00007347",  # causal agent
        "n14778436",  # agent
        "n00033020",  # communication
        "n03129123",  # creation
        "n04599396",  # work
        "n04007894",  # product
        "n06254669",  # medium
        "n08620061",  # point
        "n08578706",  # geographic point
        "n00027167",  # location
        "n02735688",  # area
        "n09816771",  # associate
        "n09626238",  # peer
        "n10401829",  # participant
        "n09289709",  # globule
        "n03932203",  # piece
        "n00022903",  # article
        "n04377057",  # system
        "n04359589",  # support
        "n04360501",  # support
        "n04336034",  # strengthener
        "n07882497",  # concoction
        "n07560652",  # fare
        "n07556970",  # course
        "n04550840",  # ware
        "n03252064",  # drygoods
        "n04580298",  # white goods
        "n04580493",  # white goods
        "n03122748",  # covering
        "n03738472",  # mechanism
        "n09349797",  # mechanism
        "n03076708",  # commodity
        "n03093574",  # consumer goods
        "n03257877",  # durables
        "n07570720",  # nutriment
        "n04081844",  # restraint
        "n03839993",  # obstruction
        "n03297735",  # establishment
        "n03748162",  # mercantile establishment
        "n03953020",  # place of business
        "n07566340",  # foodstuff
        "n03091374",  # connection
        "n02755352",  # attachment
        "n04341414",  # structural member
        "n04515129",  # upright
        "n04110955",  # rotating mechanism
        "n03536348",  # horizontal surface
        "n04362025",  # surface
        "n06873571",  # visual signal
        "n06791372",  # signal
        "n06263609",  # print media
        "n14580897",  # material
        "n02671780",  # accessory
        "n04605726",  # wrapping
        "n04187061",  # sheath
        "n03391770",  # framework
        "n03873064",  # padding
        "n02887209",  # brace
        "n04078574",  # reservoir
        "n04586421",  # winder
        "n04500060",  # turner
        "n04120093",  # runner
        "n03208556",  # disk
        "n03032811",  # circle
        "n02788689",  # bar
        "n09214060",  # bar
        "n09366017",  # natural depression
        "n09366317",  # natural elevation
        "n09287968",  # geological formation
        "n03563967",  # implement
        "n02727825",  # apparatus
        "n03664675",  # lifting device
        "n04060904",  # receptacle
        "n03211117",  # display
        "n03178782",  # design
        "n03282591",  # emblem
        "n03546340",  # housing
        "n02730265",  # applicator
        "n02974697",  # case
        "n06263369",  # press
        "n09443453",  # spring
        "n03574555",  # institution
        "n04602044",  # workplace
        "n02914991",  # building complex
        "n03619396",  # kit
        "n04088797",  # ride
        "n03237639",  # dressing
        "n01317541",  # domestic animal
        # Biological taxonomy a person would not use as a tag (the familiar ranks stay:
        # mammal, bird, reptile, insect, fish).
        "n01466257",  # chordate
        "n01471682",  # vertebrate
        "n01886756",  # placental
        "n01661818",  # diapsid
        "n01473806",  # aquatic vertebrate
        "n01524359",  # passerine
        "n01525720",  # oscine
        "n01674216",  # saurian
        "n02528163",  # teleost fish
        "n02514825",  # bony fish
        "n01727646",  # colubrid snake
        "n01661592",  # anapsid
        "n01662622",  # chelonian
        "n02134971",  # viverrine
        "n02441326",  # musteline mammal
        "n01802721",  # phasianid
        "n01845477",  # anseriform bird
        "n01825930",  # coraciiform bird
        "n01838038",  # piciform bird
        "n01822602",  # cuculiform bird
        "n01831712",  # apodiform bird
        "n01871875",  # monotreme
        "n01871543",  # prototherian
        "n01873982",  # metatherian
        "n02323902",  # leporid
        "n02323449",  # lagomorph
        "n02507649",  # procyonid
        "n02453611",  # edentate
        "n02171869",  # scarabaeid beetle
        "n02171453",  # lamellicorn beetle
        "n02206270",  # hymenopterous insect
        "n02226183",  # orthopterous insect
        "n02232951",  # dictyopterous insect
        "n02246011",  # homopterous insect
        "n02268148",  # odonate
        "n02274024",  # lepidopterous insect
        "n01776192",  # acarine
        "n02638596",  # ganoid
        "n02554730",  # percoid fish
        "n01439121",  # cyprinid
        "n01438208",  # cypriniform fish
        "n02534559",  # salmonid
        "n02642644",  # scorpaenid
        "n02642107",  # scorpaenoid
        "n02652668",  # plectognath
        "n01482071",  # elasmobranch
        "n01480516",  # cartilaginous fish
        "n01909422",  # coelenterate
        "n01914163",  # anthozoan
        "n02263378",  # neuropteron
        "n02274822",  # nymphalid
        "n02279637",  # danaid
        "n02280458",  # pierid
        "n02231052",  # phasmid
        "n02188699",  # dipterous insect
        "n01975687",  # malacostracan crustacean
        "n01976146",  # decapod crustacean
        "n02051474",  # pelecaniform seabird
        "n02055658",  # sphenisciform seabird
        "n02057731",  # pelagic bird
        "n01517565",  # ratite
        "n01632047",  # ambystomid
        "n01676755",  # iguanid
        "n01687665",  # agamid
        "n01685439",  # teiid lizard
        "n01689411",  # anguid lizard
        "n01692864",  # lacertid lizard
        "n01695681",  # archosaur
        "n01700470",  # ornithischian
        "n01703569",  # ceratopsian
        "n02503127",  # proboscidean
        "n02075927",  # pinniped mammal
        "n02062430",  # cetacean
        "n12997654",  # basidiomycete
        "n11665372",  # angiosperm
        "n11552386",  # spermatophyte
        "n13083586",  # vascular plant
        "n02401031",  # bovid
        "n02399000",  # ruminant
        "n02394477",  # even-toed ungulate
        "n02373336",  # odd-toed ungulate
        "n01428580",  # soft-finned fish
        "n02552171",  # spiny-finned fish
        "n01789386",  # gallinaceous bird
        "n02374149",  # equine
        "n02095412",  # wirehair
        "n02384858",  # racer
        "n02512938",  # food fish
        "n11675842",  # reproductive structure
        "n13087625",  # plant organ
        "n13086908",  # plant part
        "n12157056",  # kernel
        "n15074962",  # tissue
        "n03664943",  # ligament
        "n11689483",  # oilseed
        "n13138842",  # pome
        "n00017222",  # plant
        "n03956922",  # plant
        # Technical or trade categories that read badly as tags.
        "n03274561",  # electro-acoustic transducer
        "n04470953",  # transducer
        "n04597804",  # woodenware
        "n07800740",  # fodder
        "n07800091",  # feed
        "n03035510",  # cistern
        "n03393324",  # free-reed instrument
        "n02817799",  # beating-reed instrument
        "n03228016",  # double-reed instrument
        "n04222847",  # single-reed instrument
        "n03025886",  # chordophone
        "n03666917",  # lighter-than-air craft
        "n03510583",  # heavier-than-air craft
        "n04019101",  # public transport
        "n04263760",  # source of illumination
        "n04361095",  # supporting structure
        "n04014297",  # protective covering
        "n03050026",  # cloth covering
        "n03932670",  # piece of cloth
        "n03133538",  # crockery
        "n07809368",  # flavorer
        "n03248958",  # drug of abuse
        "n07713395",  # cruciferous vegetable
        "n07710007",  # solanaceous vegetable
        "n07566863",  # starches
        "n07705931",  # edible fruit
        "n03753077",  # meter
        "n03099771",  # converging lens
        "n03851341",  # optical device
        "n04185071",  # sharpener
        "n03257586",  # duplicator
        "n04077430",  # reproducer
        "n02688443",  # airfoil
        "n02951843",  # canopy
        "n03171356",  # defensive structure
        "n03385557",  # fortification
        "n03907654",  # penal institution
        "n03111690",  # correctional institution
        "n04073948",  # religious residence
        "n03414162",  # game equipment
    }
)
